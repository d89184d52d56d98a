"""Context parallelism on one GPU (NCCL, one process: two chunks, the spill exchanged between
them) against the single-device ops in bf16 on each CUDA kernel of the inner attention, and in
fp32 (the memory-efficient kernel)."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import cuda_graph
from lighthouse_attn.ops import lse_attention
from lighthouse_attn.parallel import dense_attention_cp, lighthouse_attention_cp

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def one_rank():
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    yield
    dist.destroy_process_group()


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _inputs(shape: str, dtype: torch.dtype = torch.bfloat16) -> list[torch.Tensor]:
    """``b1``: one sequence, 8 heads; ``b2``: two sequences, 8 query and 2 kv heads, in the
    ``(B, N, H, D)`` memory models make (the chunks' batch rows then strided views)."""
    g = torch.Generator(device="cuda").manual_seed(3)
    B, heads = (1, (8, 8, 8)) if shape == "b1" else (2, (8, 2, 2))
    xs = [torch.randn(B, 16384, h, 128, device="cuda", dtype=dtype, generator=g)
          .transpose(1, 2) for h in heads]
    return [(x.contiguous() if shape == "b1" else x).requires_grad_() for x in xs]


@pytest.mark.parametrize("kernel", ["cudnn", "flash", "efficient"])
@pytest.mark.parametrize("case", ["dense", "paper", "causal"])
@pytest.mark.parametrize("shape", ["b1", "b2"])
def test_one_rank_equals_the_single_op(case, kernel, shape, one_rank, monkeypatch):
    if kernel == "flash":
        monkeypatch.setattr(lse_attention, "cudnn_applies", lambda q: False)
    dtype = torch.float32 if kernel == "efficient" else torch.bfloat16
    q, k, v = _inputs(shape, dtype)
    if kernel == "efficient":  # fp32 runs the memory-efficient kernel, nothing else
        assert lse_attention.attention_forward(q, k, v, 0.1, causal=True)[2][0] == "efficient"
    if case == "dense":
        def single():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  enable_gqa=k.shape[1] != q.shape[1])

        def sharded():
            return dense_attention_cp(q, k, v, kv_heads_per_group=k.shape[1] // 2)
    else:
        config = LighthouseConfig(num_levels=3, pooling_factor=4, topk=1024, selection=case)

        def single():
            return lighthouse_attention(q, k, v, config)

        def sharded():
            return lighthouse_attention_cp(q, k, v, config)
    ref, out = single(), sharded()
    w = torch.randn_like(ref)
    want = torch.autograd.grad((ref * w).sum(), (q, k, v))
    got = torch.autograd.grad((out * w).sum(), (q, k, v))
    tol = 1e-3 if dtype == torch.float32 else 1e-2
    assert _rel(out, ref) < tol
    for a, b in zip(got, want):
        assert _rel(a, b) < tol


@pytest.mark.parametrize("case", ["dense", "paper", "causal"])
def test_one_rank_replays_from_a_cuda_graph(case, one_rank):
    """The sharded forward+backward, collectives and all, captures in a CUDA graph (what takes
    the host out of a step where it is the bottleneck) and its replay on new inputs equals an
    eager step on them."""
    q, k, v = _inputs("b1")
    if case == "dense":
        def op():
            return dense_attention_cp(q, k, v, kv_heads_per_group=4)
    else:
        config = LighthouseConfig(num_levels=3, pooling_factor=4, topk=1024, selection=case)

        def op():
            return lighthouse_attention_cp(q, k, v, config)
    w = torch.randn_like(q)

    def step():
        out = op()
        return [out, *torch.autograd.grad((out * w).sum(), (q, k, v))]

    replay, replayed = cuda_graph(step, warmup=2)
    with torch.no_grad():  # new inputs in the captured tensors
        for x in (q, k, v):
            x.copy_(torch.randn_like(x))
    replay()
    eager = step()
    for a, b in zip(replayed, eager):
        assert _rel(a, b) < 1e-3
