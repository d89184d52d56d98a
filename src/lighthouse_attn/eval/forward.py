"""How the evaluations run a model: last-position logits and a memory budget.

The memory estimate is for a forward pass without gradients: the model's fp32 weights plus,
per sequence, the largest transient tensors of one block (activations freed layer by layer)
and the logits kept. Dense attention is assumed to run in a fused kernel (FlashAttention /
memory-efficient SDPA on GPU, the flash kernel on CPU), so it adds O(N) memory, not O(N^2).
An estimate, not a bound.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..models import Llama, LlamaConfig
from ..models.memory import block_bytes, gathered_bytes, logits_bytes, residual_bytes

MEMORY_FRACTION = 0.8
"""Share of the device's free memory the evaluations plan to use by default."""


def final_logits(model, input_ids: Tensor) -> Tensor:
    """Logits at the last position, ``(B, V)`` float32, for ``input_ids`` ``(B, N)`` int64.

    For a :class:`Llama` a forward hook on the final norm keeps only the last position, so the
    output head runs on one position per row instead of ``N``. Any other callable
    ``model(input_ids) -> (B, N, V)`` (a test stub, say) is run as is.
    """
    if not isinstance(model, Llama):
        return model(input_ids)[:, -1].float()
    handle = model.norm.register_forward_hook(lambda _mod, _inp, out: out[:, -1:])
    try:
        return model(input_ids)[:, -1]
    finally:
        handle.remove()


def bytes_per_sequence(config: LlamaConfig, seq_len: int, *, attention: str = "dense",
                       bf16: bool = False, full_logits: bool = False) -> int:
    """Estimated peak bytes one sequence of ``seq_len`` adds to a no-grad forward pass.

    ``full_logits``: the logits of every position are kept (and their log-softmax), as for
    the loss; otherwise only the last position's. ``attention="lighthouse"`` adds the gathered
    q, k, v and output of a Lighthouse layer.
    """
    N = seq_len
    block = block_bytes(config, N, bf16)
    if attention == "lighthouse" and config.lighthouse_layer_indices and \
            not config.lighthouse.is_short(N):
        S = config.lighthouse.gathered_length(N)
        block += gathered_bytes(config, S, bf16, tensors=4) + 4 * N * config.n_heads * 8
    return block + residual_bytes(config, N) + logits_bytes(config, 3 * N if full_logits else 1)


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device``: the GPU's free memory, or the CPU's available memory
    (``MemAvailable``; physical memory where that cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fit_batch(per_sequence: int, budget: int, batch_size: int) -> int:
    """The largest micro-batch ``<= batch_size`` whose activations fit ``budget`` bytes; 0 when
    not even one sequence fits."""
    if per_sequence <= 0:
        return batch_size
    return max(0, min(batch_size, budget // per_sequence))
