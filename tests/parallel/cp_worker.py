"""One rank of the context-parallel exactness checks (spawned by test_context_parallel.py)."""

import contextlib
import json
import sys
from dataclasses import replace

import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from conftest import rand_qkv  # noqa: E402

from lighthouse_attn import LighthouseConfig, lighthouse_attention, select  # noqa: E402
from lighthouse_attn.parallel import (  # noqa: E402
    chunk_config,
    collectives,  # noqa: E402
    dense_attention_cp,
    lighthouse_attention_cp,
    shard_sequence,
)
from lighthouse_attn.parallel.fused import batch_strides  # noqa: E402


@contextlib.contextmanager
def _count_pieces():
    """Bytes this rank contributes to every all-gather of the forward pass."""
    pieces = []
    into = collectives.all_gather_into

    def counted_into(out, x, *args, **kw):
        pieces.append(x.numel() * x.element_size())
        return into(out, x, *args, **kw)

    collectives.all_gather_into = counted_into
    try:
        yield pieces
    finally:
        collectives.all_gather_into = into


def run(rank: int, world: int, init: str, cases: list[dict], out_path: str,
        exchange_spill: bool) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    results = []
    for case in cases:
        cfg = LighthouseConfig(backend=case.get("backend", "torch"), **case["config"])
        ref_cfg = replace(cfg, backend="torch")  # the one-process op on the exact torch path
        H, Hkv, N, B = case["H"], case["Hkv"], case["N"], case.get("B", 1)
        q, k, v = rand_qkv(B=B, H=H, Hkv=Hkv, N=N, D=8, dtype=torch.float64, seed=7)
        w = torch.randn(B, H, N, 8, generator=torch.Generator().manual_seed(9),
                        dtype=torch.float64)
        full = [x.clone().requires_grad_() for x in (q, k, v)]
        dense = case.get("dense", False)
        ref = (torch.nn.functional.scaled_dot_product_attention(
            full[0], full[1].repeat_interleave(H // Hkv, 1),
            full[2].repeat_interleave(H // Hkv, 1), is_causal=True)
               if dense else lighthouse_attention(*full, ref_cfg))
        (ref * w).sum().backward()
        local = [shard_sequence(x.detach(), 2, rank, world) for x in (q, k, v)]
        if case.get("bnhd"):  # as a projection makes them: (B, N, H, D) seen as (B, H, N, D)
            local = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in local]
        local = [x.requires_grad_() for x in local]
        grad_strides = {}  # as the op returns them, before autograd accumulates them
        for i, x in enumerate(local):
            x.register_hook(lambda g, i=i: grad_strides.__setitem__(i, g.stride()))
        saved = []  # shapes autograd keeps for backward
        with _count_pieces() as pieces, torch.autograd.graph.saved_tensors_hooks(
                lambda x: saved.append(tuple(x.shape)) or x, lambda x: x):
            out = (dense_attention_cp(*local, kv_heads_per_group=case.get("kv_heads_per_group"))
                   if dense else
                   lighthouse_attention_cp(*local, cfg, exchange_spill=exchange_spill))
        # on the kernels the layer is one autograd node straight on the inputs (no view
        # nodes around it: each costs host time in the backward)
        inputs_next = {type(f).__name__ for f, _ in out.grad_fn.next_functions if f}
        one_node = inputs_next == {"AccumulateGrad"}
        (out * shard_sequence(w, 2, rank, world)).sum().backward()
        want = shard_sequence(ref.detach(), 2, rank, world)
        diff = (out.detach() - want).abs().amax(dim=(0, 1, 3))  # per local row
        grads = [float((a.grad - shard_sequence(b.grad, 2, rank, world)).abs().max())
                 for a, b in zip(local, full)]
        same_selection = True
        if not dense:
            local_cfg = chunk_config(ref_cfg, N, world)
            glob = select(q, k, ref_cfg)
            E = local_cfg.gathered_length(N // (2 * world))
            n = N // (2 * world)
            for chunk in (rank, 2 * world - 1 - rank):
                if cfg.selection == "causal":
                    break  # checked through the outputs: every cut's decisions are causal
                part = select(*(x[:, :, chunk * n:(chunk + 1) * n] for x in (q, k)), local_cfg)
                g_level = glob.level[..., chunk * E:(chunk + 1) * E]
                g_index = glob.index[..., chunk * E:(chunk + 1) * E]
                offset = (chunk * n) // local_cfg.pooling_factor ** g_level
                same_selection &= torch.equal(part.level, g_level)
                same_selection &= torch.equal(part.index, g_index - offset)
        # the output and gradients: new tensors (not views: in-place use stays legal), laid
        # out as the inputs where their chunks are batch-row views of them
        layouts = [out.stride() == batch_strides(local[0]) and not out._is_view()]
        layouts += [grad_strides[i] == batch_strides(x) for i, x in enumerate(local)]
        results.append({"rows": diff.tolist(), "out": float(diff.max()), "grads": grads,
                        "layouts": all(layouts), "one_node": one_node,
                        "same_selection": bool(same_selection), "piece_bytes": sum(pieces),
                        "keeps_whole_sequence": any(N in shape for shape in saved)})
    with open(f"{out_path}.{rank}", "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, init, cases, out_path, spill = sys.argv[1:]
    run(int(rank), int(world), init, json.loads(cases), out_path, spill == "1")
