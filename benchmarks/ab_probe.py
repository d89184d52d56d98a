"""A/B probe (interleaved repeats): the layer through the one-node path (cuDNN op called
directly) vs the composed path (SDPA), the inner kernel called both ways, and both under CUDA
graphs (torch.cuda.make_graphed_callables). Kernel-only GPU time from the profiler."""

import json
import os
import statistics

import torch
from layer_kernels import kernel_us

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import warm_up_gpu
from lighthouse_attn.ops.inner import fast_causal_attention

OUT = os.environ.get("OUT", ".")
res = []


def ev(fn):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e)


def interleaved(fns: dict, reps: int) -> dict:
    for f in fns.values():
        f()
        f()
    torch.cuda.synchronize()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            times[k].append(ev(f))
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def kernel_ms(fn, steps=3):
    return round(sum(kernel_us(fn, steps).values()) / 1e3, 4)


def graphed_step(fn, args, grad):
    g = torch.cuda.make_graphed_callables(fn, args)

    def step():
        out = g(*args)
        out.backward(grad)
    return step


warm_up_gpu(2)
for N, K in ((32768, 512), (32768, 2048), (131072, 2048), (524288, 2048)):
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, backend="triton")
    S = cfg.gathered_length(N)
    q, k, v = (torch.randn(1, 8, N, 128, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    qs, ks, vs = (torch.randn(1, 8, S, 128, device="cuda", dtype=torch.bfloat16,
                              requires_grad=True) for _ in range(3))
    gs = torch.randn_like(qs)

    def sdpa_inner(a, b, c, s=None):
        return fast_causal_attention(a, b, c, s)

    def op_inner(a, b, c):
        return torch.ops.aten._scaled_dot_product_cudnn_attention(a, b, c, None, True, 0.0,
                                                                  True, False)[0]

    def step(fn, args, grad):
        def run():
            out = fn(*args)
            torch.autograd.grad(out, args, grad)
        return run

    one_node = lambda a, b, c: lighthouse_attention(a, b, c, cfg)  # noqa: E731
    composed = lambda a, b, c: lighthouse_attention(a, b, c, cfg, attn_fn=sdpa_inner)  # noqa
    fns = {"layer one-node": step(one_node, (q, k, v), g),
           "layer composed": step(composed, (q, k, v), g),
           "inner sdpa": step(sdpa_inner, (qs, ks, vs), gs),
           "inner op": step(op_inner, (qs, ks, vs), gs)}
    row = {"N": N, "K": K, "S": S, "events_ms": interleaved(fns, 15 if N < 500000 else 7)}
    row["kernel_ms"] = {k: kernel_ms(f) for k, f in fns.items()}
    try:
        gfns = {"layer one-node graphed": graphed_step(one_node, (q, k, v), g),
                "inner sdpa graphed": graphed_step(sdpa_inner, (qs, ks, vs), gs)}
        row["graphed_ms"] = interleaved(gfns, 15 if N < 500000 else 7)
    except Exception as err:  # noqa: BLE001
        row["graphed_error"] = repr(err)[:400]
    print(json.dumps(row), flush=True)
    res.append(row)
    with open(os.path.join(OUT, "ab.json"), "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "rows": res}, f, indent=1)
    q = k = v = qs = ks = vs = g = gs = None
    torch.cuda.empty_cache()
