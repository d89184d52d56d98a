"""The Lighthouse op compiled by inductor against eager, on random inputs: relative
differences of the output and of each input's gradient (random output gradient), beside a
second eager run and an eager run on inputs with one entry in a hundred moved by one unit in
the last place (how far rounding-sized changes, through near-ties in the selection, move the
result), per length and dtype. A companion to
``gpu_compiled_step.py``, to tell a wrong compiled gradient from a selection that flips.

    python benchmarks/gpu_compiled_op.py --out compiled_op.json
"""

import argparse
import json

import torch

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import environment

CASES = [(32768, 512), (98304, 1536)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run(fn, xs, go) -> list[torch.Tensor]:
    xs = [x.detach().clone().requires_grad_() for x in xs]
    out = fn(*xs)
    return [out.detach(), *torch.autograd.grad(out, xs, go)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="compiled_op.json")
    args = ap.parse_args()
    res = {"benchmark": "compiled_op", **environment(), "rows": []}
    for (N, K), dtype in [(c, d) for c in CASES for d in (torch.bfloat16, torch.float32)]:
        cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, backend="triton")
        g = torch.Generator(device="cuda").manual_seed(N)
        xs = [torch.randn(1, 8, N, 128, device="cuda", generator=g).to(dtype)
              for _ in range(3)]
        go = torch.randn(1, 8, N, 128, device="cuda", generator=g).to(dtype)
        eager = lambda a, b, c: lighthouse_attention(a, b, c, cfg)  # noqa: E731
        torch._dynamo.reset()
        compiled = torch.compile(eager, fullgraph=True)
        ref = run(eager, xs, go)
        eps = torch.finfo(dtype).eps  # one entry in a hundred moved by about one ulp
        nudged = [(x.float() * (1 + eps * (torch.rand(x.shape, device="cuda", generator=g)
                                           < 0.01))).to(dtype) for x in xs]
        row = {"seq_len": N, "topk": K, "dtype": str(dtype)}
        for name, fn, inputs in (("eager_again", eager, xs), ("compiled", compiled, xs),
                                 ("eager_nudged", eager, nudged)):
            got = run(fn, inputs, go)
            row[name] = {t: rel(a, b) for t, a, b in zip(("out", "dq", "dk", "dv"), got, ref)}
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
