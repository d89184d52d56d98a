"""Host cost of launching the pool kernel: through triton's JIT launcher, and straight through
the compiled kernel's launcher (what ``ops/triton/launch.py`` does), at 32K tokens.

    python benchmarks/launch_probe.py --out launch.json
"""

import argparse
import json

import torch
import triton
from host_overhead import host_us  # benchmarks/ is on the path

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.ops.triton import window
from lighthouse_attn.ops.triton.launch import accumulator
from lighthouse_attn.ops.triton.scores import row_norms_pair
from lighthouse_attn.ops.triton.select import select_with_map


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="launch.json")
    args = ap.parse_args()
    N, H, D = 32768, 8, 128
    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=512, backend="triton")
    S = cfg.gathered_length(N)
    q, k, v = (torch.randn(1, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    sq0, sk0 = row_norms_pair(q, k)
    _, pm = select_with_map(sq0, sk0, cfg)
    outs = [q.new_empty(1, H, S, D) for _ in range(3)]
    rows, skip = window.pool_plan(4, 3, D)
    grid = (triton.cdiv(N, rows), 3 * H)
    # the pool kernel's arguments as window.pool passes them, no coarsest level given (the
    # q, k, v in its place are unread placeholders)
    pos = [q, k, v, *outs, q, k, v, pm, N, pm.shape[2], S, D, H, H, H, 1, 1, 1, 1, 1, 1,
           1, 1, 1, H, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3]]
    const = dict(SHIFT=0, MEAN=True, L=3, P=4, LOG2P=2, ROWS=rows, BLOCK_D=128,
                 ACC=accumulator(q.dtype), SKIP_EMPTY=skip, GIVEN=0)
    compiled = window._pool_kernel[grid](*pos, **const, num_warps=4)
    names = window._pool_kernel.arg_names
    allargs = pos + [const[n] for n in names[len(pos):]]
    from triton import knobs

    def direct():
        stream = torch._C._cuda_getCurrentRawStream(0)
        compiled.run(grid[0], grid[1], 1, stream, compiled.function, compiled.packed_metadata,
                     None, knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook,
                     *allargs)

    ref = [o.clone() for o in outs]
    for o in outs:
        o.zero_()
    direct()
    torch.cuda.synchronize()
    same = all(torch.equal(a, b) for a, b in zip(ref, outs))
    res = {"device": torch.cuda.get_device_name(), "triton": triton.__version__,
           "direct equals jit": same,
           "jit launch us": host_us(lambda: window._pool_kernel[grid](*pos, **const,
                                                                      num_warps=4)),
           "direct launch us": host_us(direct),
           "pool() us": host_us(lambda: window.pool([q, k, v], pm, S, [H] * 3, [1] * 3,
                                                    [1] * 3, False, True, 4, 3)),
           "torch.empty us": host_us(lambda: torch.empty(1, H, S, D, device="cuda")),
           "raw stream us": host_us(lambda: torch._C._cuda_getCurrentRawStream(0))}
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
