import os, sys, torch
variant = sys.argv[1]
from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.ops.triton import launch
if variant == "nohook":
    launch._hooked = lambda: False
if variant == "nodevice":
    launch.torch = type("T", (), {"cuda": type("C", (), {"current_device": staticmethod(lambda: 0)}), "_C": torch._C, "Tensor": torch.Tensor})
if variant == "noraw":
    launch._raw_launch = lambda run: None
det = variant == "det"
cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=512, backend="triton", deterministic=det)
fn = lambda a, b, c: lighthouse_attention(a, b, c, cfg)
q, k, v = (torch.randn(1, 8, 32768, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
g = torch.randn_like(q)
for _ in range(3):
    out = fn(q, k, v); torch.autograd.grad(out, (q, k, v), g)
torch.cuda.synchronize()
leaves = tuple(x.detach().clone().requires_grad_() for x in (q, k, v))
try:
    graphed = torch.cuda.make_graphed_callables(fn, leaves)
    out = graphed(*leaves); torch.autograd.grad(out, leaves, g); torch.cuda.synchronize()
    print(variant, "OK")
except Exception as e:
    print(variant, "FAIL", str(e).splitlines()[0][:100])
