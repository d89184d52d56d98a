"""Does ``make_graphed_callables`` capture the eager layer (one-node path, direct launches)?
Runs the benchmark's sequence (eager steps, a captured inner attention, then the captured
layer) in one process per variant and prints OK or the error.

    python benchmarks/capture_probe.py VARIANT     # default | noraw | hooks | jit (env) | det
"""

import sys

import torch

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.ops.inner import fast_causal_attention
from lighthouse_attn.ops.triton import launch

variant = sys.argv[1]
if variant == "noraw":  # the compiled launcher's Python wrapper instead of its C entry
    launch._raw_launch = lambda run: None
cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=512, backend="triton",
                       deterministic=variant == "det")
S = cfg.gathered_length(32768)


def layer(a, b, c):
    return lighthouse_attention(a, b, c, cfg)


def graphed_step(fn, inputs, grad):
    leaves = tuple(x.detach().clone().requires_grad_() for x in inputs)
    graphed = torch.cuda.make_graphed_callables(fn, leaves)
    out = graphed(*leaves)
    torch.autograd.grad(out, leaves, grad)
    torch.cuda.synchronize()


q, k, v = (torch.randn(1, 8, 32768, 128, device="cuda", dtype=torch.bfloat16,
                       requires_grad=True) for _ in range(3))
qs, ks, vs = (torch.randn(1, 8, S, 128, device="cuda", dtype=torch.bfloat16,
                          requires_grad=True) for _ in range(3))
g = torch.randn_like(q)
for _ in range(3):
    torch.autograd.grad(layer(q, k, v), (q, k, v), g)
torch.cuda.synchronize()
try:
    if variant != "alone":
        graphed_step(fast_causal_attention, (qs, ks, vs), torch.randn_like(qs))
    graphed_step(layer, (q, k, v), g)
    print(variant, "OK")
except Exception as e:  # noqa: BLE001 - report any failure
    print(variant, "FAIL", str(e).strip().splitlines()[0][:120])
