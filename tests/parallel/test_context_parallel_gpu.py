"""Context parallelism on one GPU (NCCL, one process: two chunks, the spill exchanged between
them) against the single-device ops in bf16, on each CUDA kernel of the inner attention."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.ops import prefix_attention
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


@pytest.mark.parametrize("kernel", ["cudnn", "flash"])
@pytest.mark.parametrize("case", ["dense", "paper", "causal"])
def test_one_rank_equals_the_single_op(case, kernel, one_rank, monkeypatch):
    if kernel == "flash":
        monkeypatch.setattr(prefix_attention, "cudnn_applies", lambda q: False)
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (torch.randn(1, 8, 16384, 128, device="cuda", dtype=torch.bfloat16,
                           generator=g).requires_grad_() for _ in range(3))
    if case == "dense":
        def single():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def sharded():
            return dense_attention_cp(q, k, v, kv_heads_per_group=4)  # two groups
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
    assert _rel(out, ref) < 1e-2
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-2
