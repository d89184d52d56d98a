"""Where the GPU waits in the C=1 context-parallel layer at 64K (bf16, L=3, p=4, K=1024,
forward+backward with a random output weight), and whether running the chunks' attention
pieces on other kernels moves it.

For the single op and each arm of the sharded path: a traced step split into its forward and
its backward (host time of each, and the GPU's busy and idle time on the kernels each
launched), the host's own time per step and per forward (behind a GPU sleep), the synced
step, and the largest differences from the shipped arm's outputs and gradients. (The CUDA
graph replays of the same steps are ``cp_c1_graphs.py``'s.) The arms (set here by
replacing functions, not in the library):

- ``cp``: as shipped (the pieces on cuDNN);
- ``cp_flash``: the pieces' forward and backward on flash (cuDNN reported unavailable);
- ``cp_flash_fwd``: the pieces' forward on flash, their backward on cuDNN from the flash
  forward's output and logsumexp.

Every measurement runs twice, the arms interleaved, so that the spread between rounds shows.

    torchrun --nproc-per-node 1 benchmarks/cp_c1_timeline.py --out cp_c1_timeline.json
"""

import contextlib
import json

import torch
from host_timing import median_host_ms, one_process_parser, start_one_process
from timeline import trace_step
from torch.profiler import record_function

import lighthouse_attn.ops.lse_attention as pieces
import lighthouse_attn.parallel.chunk_attention as chunk_attention
from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import sleep_cycles, time_ms
from lighthouse_attn.parallel import lighthouse_attention_cp

_FLASH_FWD = torch.ops.aten._scaled_dot_product_flash_attention.default


def _flash_forward_for_cudnn(q, k, v, scale, causal, deterministic=False):
    """``attention_forward`` on flash, saved so that its backward runs on cuDNN."""
    H = q.shape[1]
    out, lse, cq, ck, mq, mk, seed, offset, _ = _FLASH_FWD(
        q, pieces._expand(k, H), pieces._expand(v, H), 0.0, causal, False, scale=scale)
    return out, lse, ("cudnn", (cq, ck, seed, offset), (mq, mk))


@contextlib.contextmanager
def arm(name: str):
    """The pieces' kernels of arm ``name`` inside the block (``chunk_attention`` calls the
    pieces through the name ``attention_forward`` it imported)."""
    saved = pieces.cudnn_applies, chunk_attention.attention_forward
    if name == "cp_flash":
        pieces.cudnn_applies = lambda q: False
    elif name == "cp_flash_fwd":
        def forward(q, k, v, scale, causal, deterministic=False):
            if q.dtype in (torch.float16, torch.bfloat16) and not deterministic:
                return _flash_forward_for_cudnn(q, k, v, scale, causal)
            return saved[1](q, k, v, scale, causal, deterministic)
        chunk_attention.attention_forward = forward
    try:
        yield
    finally:
        pieces.cudnn_applies, chunk_attention.attention_forward = saved


def forward_of(name, cfg, q, k, v, w):
    """The loss of arm ``name``'s forward (a random weighting of its output)."""
    op = lighthouse_attention if name == "single" else lighthouse_attention_cp
    return lambda: (op(q, k, v, cfg) * w).sum()


def step_of(name, cfg, q, k, v, w):
    """Arm ``name``'s forward+backward, its two halves marked for the trace."""
    fwd = forward_of(name, cfg, q, k, v, w)

    def run():
        with record_function("forward"):
            loss = fwd()
        with record_function("backward"):
            return torch.autograd.grad(loss, (q, k, v))
    return run


def main() -> None:
    args = one_process_parser("cp_c1_timeline.json").parse_args()
    device = start_one_process(args.smoke)
    N, K, D = (8192, 512, 16) if args.smoke else (65536, 1024, 128)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, 8, N, D, device=device, dtype=dtype, generator=g)
               .requires_grad_() for _ in range(3))
    w = torch.randn(1, 8, N, D, device=device, dtype=dtype, generator=g)
    res = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "torch": torch.__version__, "seq_len": N, "topk": K, "heads": 8, "head_dim": D,
           "dtype": str(dtype)}
    arms = ("single", "cp", "cp_flash", "cp_flash_fwd")
    cycles = sleep_cycles(1.0) if device == "cuda" else 0
    for sel in ("paper", "causal"):
        cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, selection=sel)

        def forward(name, cfg=cfg):
            return forward_of(name, cfg, q, k, v, w)

        def step(name, cfg=cfg):
            return step_of(name, cfg, q, k, v, w)

        r: dict = {name: {} for name in arms}
        ref = None
        for name in arms:
            with arm(name):
                try:
                    out = forward(name)().detach()  # no graph kept alive
                    grads = step(name)()
                except RuntimeError as err:
                    r[name]["error"] = repr(err)[:300]
                    continue
                if name == "cp":
                    ref = grads, out
                elif name != "single" and ref is not None:
                    r[name]["max_grad_diff"] = max((a - b).abs().max().item()
                                                   for a, b in zip(grads, ref[0]))
                    r[name]["loss_diff"] = (out - ref[1]).abs().item()
        live = [n for n in arms if "error" not in r[n]]
        if device != "cuda":  # --smoke: the arms ran, nothing to time
            res[sel] = r
            continue
        for rnd in (1, 2):
            for name in live:
                with arm(name):
                    fn, fwd = step(name), forward(name)
                    for _ in range(3):
                        fn()
                    torch.cuda.synchronize()
                    r[name][f"host_ms_{rnd}"] = median_host_ms(fn, cycles)
                    r[name][f"host_fwd_ms_{rnd}"] = median_host_ms(fwd, cycles)
                    r[name][f"sync_ms_{rnd}"] = round(
                        time_ms(fn, warmup=3, repeats=40)["median_ms"], 3)
        for name in live[1:]:
            for key in ("sync_ms_1", "sync_ms_2"):
                if key in r[name] and key in r["single"]:
                    r[name][key.replace("ms", "ratio")] = round(r[name][key]
                                                                / r["single"][key], 3)
        res[sel] = r
        print(sel, json.dumps(r), flush=True)
    # the traces last, after every timing
    for sel in ("paper", "causal") if device == "cuda" else ():
        cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, selection=sel)
        for name in res[sel]:
            if "error" in res[sel][name]:
                continue
            with arm(name):
                t = trace_step(step_of(name, cfg, q, k, v, w), phases=("forward", "backward"))
            res[sel][name]["trace"] = {key: t[key] for key in t if key != "kernels"}
            res[sel][name]["kernels"] = t["kernels"]
            print(sel, name, json.dumps(res[sel][name]["trace"]), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
