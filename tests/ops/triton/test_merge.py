"""The merge kernel (``ops/triton/merge.py``) against its torch twin, on strided views as the
context-parallel chunks pass them (a chunk's slot of a two-chunk batch)."""

import pytest
import torch

pytest.importorskip("triton")
from lighthouse_attn.ops.lse_attention import merge_reference  # noqa: E402
from lighthouse_attn.ops.triton.merge import merge_triton  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter on the CPU


@pytest.mark.parametrize("dtype,lse_dtype", [(torch.float64, torch.float64),
                                             (torch.bfloat16, torch.float32)])
def test_merge_kernel_matches_torch(dtype, lse_dtype):
    g = torch.Generator().manual_seed(3)
    B, H, E, D = 2, 3, 40, 24  # E and D not multiples of the kernel's blocks
    both = torch.randn(2 * B, H, E, D, generator=g, dtype=torch.float64).to(dtype)
    lse = torch.randn(2 * B, H, E, generator=g, dtype=torch.float64).to(lse_dtype) * 4
    out_2 = torch.randn(B, H, E, D, generator=g, dtype=torch.float64).to(dtype)
    lse_2 = torch.randn(B, H, E, generator=g, dtype=torch.float64).to(lse_dtype) * 4
    both, lse, out_2, lse_2 = (x.to(DEV) for x in (both, lse, out_2, lse_2))
    lse[1, 0, :3] = float("-inf")  # a side without keys takes the other side whole
    lse_2[0, 1, :2] = float("-inf")
    results = []
    for fn in (merge_triton, merge_reference):
        o, s = both.clone(), lse.clone()
        fn(o.unflatten(0, (-1, 2))[:, 1], s.unflatten(0, (-1, 2))[:, 1], out_2, lse_2)
        results.append((o, s))
    (o, s), (ro, rs) = results
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(o, ro, **tol)
    torch.testing.assert_close(s, rs, rtol=1e-6, atol=1e-12 if lse_dtype == torch.float64 else 1e-6)
    assert not torch.equal(o, both)  # slot 1 merged
    assert torch.equal(o.unflatten(0, (-1, 2))[:, 0], both.unflatten(0, (-1, 2))[:, 0])
