"""Context parallelism on the CPU (gloo): the sharded op equals the single-process op."""

import json
import os
import subprocess
import sys

import pytest

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.parallel import chunk_config, shard_sequence, unshard_sequence
from lighthouse_attn.plan import context_parallel_traffic

WORKER = os.path.join(os.path.dirname(__file__), "cp_worker.py")


def spawn(world: int, cases: list[dict], tmp_path, exchange_spill: bool = True) -> list:
    init = f"file://{tmp_path}/init-{world}-{int(exchange_spill)}"
    out = str(tmp_path / f"out-{world}-{int(exchange_spill)}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, WORKER, str(r), str(world), init,
                               json.dumps(cases), out, "1" if exchange_spill else "0"], env=env,
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errs)
    return [json.load(open(f"{out}.{r}")) for r in range(world)]


CASES_2 = [
    dict(N=2048, H=2, Hkv=2, config=dict(num_levels=2, pooling_factor=2, topk=512)),
    dict(N=8192, H=4, Hkv=2, config=dict(num_levels=3, pooling_factor=4, topk=512)),
    dict(N=2048, H=4, Hkv=2, config=dict(num_levels=3, pooling_factor=2, topk=512,
                                         gqa="shared")),
    dict(N=2048, H=2, Hkv=1, config=dict(num_levels=2, pooling_factor=2, topk=512,
                                         selection="causal")),
    dict(N=8192, H=2, Hkv=2, config=dict(num_levels=3, pooling_factor=4, topk=512,
                                         selection="causal")),
    # the chunks' cascades, gathers and scatters on the Triton kernels (the CPU interpreter)
    # in a projection's layout, so the chunks are batch-row views (as in a model)
    dict(N=2048, H=2, Hkv=1, B=2, bnhd=True, backend="triton",
         config=dict(num_levels=3, pooling_factor=2, topk=512, selection="causal")),
    dict(N=2048, H=2, Hkv=1, backend="triton", config=dict(num_levels=3, pooling_factor=2,
                                                           topk=512, gqa="shared")),
    dict(N=1024, H=2, Hkv=1, dense=True, config=dict(num_levels=1)),
    # two groups of kv heads gathered one after the other (the second while the first computes)
    dict(N=1024, H=4, Hkv=2, dense=True, kv_heads_per_group=1, config=dict(num_levels=1)),
]
CASES_4 = [
    dict(N=2048, H=2, Hkv=2, config=dict(num_levels=2, pooling_factor=2, topk=1024)),
    dict(N=1024, H=6, Hkv=3, dense=True, kv_heads_per_group=1, config=dict(num_levels=1)),
    dict(N=4096, H=4, Hkv=2, B=2, config=dict(num_levels=3, pooling_factor=2, topk=1024,
                                              selection="causal")),
]


CASES_1 = [  # one process: two chunks, the spill exchanged between them
    dict(N=4096, H=4, Hkv=2, config=dict(num_levels=3, pooling_factor=2, topk=512)),
    # one head: the chunks' outputs reassemble as a view, and the spill is added in place on it
    dict(N=8192, H=1, Hkv=1, config=dict(num_levels=3, pooling_factor=4, topk=512)),
    # the kernels' one node with the coarsest means from the norm kernel (windows of 16)
    dict(N=4096, H=1, Hkv=1, backend="triton", config=dict(num_levels=3, pooling_factor=4,
                                                           topk=256, selection="causal")),
    # contiguous sequences of a batch: their chunks are no batch-row views (copied in, and
    # the output and gradients laid out so that they are)
    dict(N=2048, H=2, Hkv=1, B=2, backend="triton", config=dict(num_levels=3,
                                                                pooling_factor=2, topk=512)),
]


@pytest.mark.parametrize("world,cases", [(1, CASES_1), (2, CASES_2), (4, CASES_4)])
def test_sharded_op_equals_the_single_process_op(world, cases, tmp_path):
    results = spawn(world, cases, tmp_path)
    for i, case in enumerate(cases):
        for rank in range(world):
            r = results[rank][i]
            assert r["out"] < 1e-10, (case, rank, r["out"])
            assert max(r["grads"]) < 1e-10, (case, rank, r["grads"])
            assert r["same_selection"], (case, rank)
            if case.get("backend") == "triton":
                assert r["layouts"] and r["one_node"], (case, rank)
            # what `plan --context-parallel` reports is what the collectives move
            traffic = context_parallel_traffic(
                LighthouseConfig(**case["config"]), case["N"], world, heads=case["H"],
                kv_heads=case["Hkv"], head_dim=8, dtype="fp64", batch_size=case.get("B", 1))
            parts = traffic.get("lighthouse") or {}
            want = (traffic["dense_all_gather"]["piece_bytes"] if case.get("dense") else
                    sum(parts[x]["piece_bytes"] for x in ("gathered_kv", "spill",
                                                          "causal_scores") if x in parts))
            assert r["piece_bytes"] == want, (case, r["piece_bytes"], want)
            if case.get("dense"):  # memory bounded: nothing N long is kept for backward
                assert not r["keeps_whole_sequence"], (case, rank)


def test_without_the_spill_exchange_the_error_sits_on_chunk_boundaries(tmp_path):
    case = CASES_2[1]  # L=3, p=4: 15 spilled rows per boundary
    results = spawn(2, [case], tmp_path, exchange_spill=False)
    n = case["N"] // 4
    spill = 4**2 - 1
    for rank in range(2):
        rows = results[rank][0]["rows"]
        for slot, chunk in enumerate((rank, 3 - rank)):
            part = rows[slot * n:(slot + 1) * n]
            if chunk == 0:
                assert max(part) < 1e-10
                continue
            assert min(part[:spill]) > 1e-6  # every spilled row misses its term
            assert max(part[spill:]) < 1e-10  # and nothing else moves


def test_layout_round_trip_and_positions():
    import torch

    from lighthouse_attn.parallel import local_positions

    x = torch.arange(24).view(1, 24)
    parts = [shard_sequence(x, 1, r, 3) for r in range(3)]
    assert parts[0].tolist() == [[0, 1, 2, 3, 20, 21, 22, 23]]
    assert torch.equal(unshard_sequence(parts, 1), x)
    assert local_positions(8, 1, 3).tolist() == [4, 5, 6, 7, 16, 17, 18, 19]


def test_batch_strides_make_the_chunks_batch_row_views():
    import torch

    from lighthouse_attn.parallel.fused import batch_strides
    from lighthouse_attn.parallel.layout import as_batch

    for shape, make in [((1, 3, 8, 4), lambda s: torch.randn(s)),  # one sequence: any layout
                        ((2, 3, 8, 4), lambda s: torch.randn(s[0], s[2], s[1], s[3])
                         .transpose(1, 2)),  # a projection's layout: its own
                        ((2, 3, 8, 4), lambda s: torch.randn(s))]:  # contiguous: rows apart
        x = make(shape)
        new = torch.empty_strided(shape, batch_strides(x))
        assert as_batch(new).data_ptr() == new.data_ptr() and as_batch(new)._is_view()
        assert as_batch(new).untyped_storage().data_ptr() == new.untyped_storage().data_ptr()
        viewable = as_batch(x).untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        assert (new.stride() == x.stride()) == viewable


@pytest.mark.parametrize("kw,N,world,match", [
    (dict(num_levels=2, pooling_factor=2, topk=256), 2048, 2, "try topk=512"),
    (dict(num_levels=2, pooling_factor=2, topk=512), 2050, 2, "equal chunks"),
    (dict(num_levels=3, pooling_factor=4, topk=512), 2048 * 4 + 32, 2, "whole coarsest windows"),
    (dict(num_levels=2, pooling_factor=2, topk=512, scorer="dilated", dilation=2), 2048, 2,
     "use scorer='norm'"),
    (dict(num_levels=2, pooling_factor=2, topk=512, scorer="affinity"), 2048, 2,
     "affinity scorer reads across chunk"),
    (dict(num_levels=3, pooling_factor=4, topk=1024), 8192, 4, "too short"),
])
def test_configs_that_cannot_be_exact_are_refused(kw, N, world, match):
    with pytest.raises(ValueError, match=match):
        chunk_config(LighthouseConfig(**kw), N, world)
    assert chunk_config(LighthouseConfig(num_levels=2, pooling_factor=2, topk=512), 2048,
                        2).topk == 128


def test_dense_groups_must_divide_the_kv_heads():
    import torch

    from lighthouse_attn.parallel import dense_attention_cp

    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"must divide the 2 kv heads \(got 3\); use one of"):
        dense_attention_cp(x, x[:, :2], x[:, :2], group=object(), kv_heads_per_group=3)
