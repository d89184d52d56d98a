"""A rough up-front estimate of training memory per process, to refuse hopeless runs early."""

from __future__ import annotations

import os

import torch

from ..models import ModelConfig
from ..models.memory import (
    block_bytes,
    gathered_bytes,
    gib,
    logits_bytes,
    optimizer_state_bytes,
    residual_bytes,
)
from ..settings import SettingError


def estimate_bytes(model: ModelConfig, seq_len: int, micro_batch: int, world_size: int,
                   bf16: bool, checkpointing: bool, lighthouse: bool,
                   context_parallel: int = 1) -> dict[str, int]:
    """Bytes per process: ``state`` (fp32 weights, grads and AdamW moments, sharded over
    ``world_size``), ``activations`` (saved for backward; with checkpointing only block
    inputs plus one block's internals) and ``logits``, for this process's ``seq_len /
    context_parallel`` tokens of each sequence. An estimate, not a bound."""
    L, b, N = model.n_layers, micro_batch, seq_len // context_parallel
    per_block = block_bytes(model, b * N, bf16)
    if lighthouse and model.lighthouse_layer_indices:
        S = model.lighthouse.gathered_length(seq_len) // context_parallel
        per_block += b * gathered_bytes(model, S, bf16, tensors=5)  # q, k, v, o, grad
    residual = residual_bytes(model, b * N)
    activations = (L * residual + per_block) if checkpointing else L * (residual + per_block)
    return {"state": optimizer_state_bytes(model, world_size), "activations": activations,
            "logits": logits_bytes(model, 3 * b * N)}


def available_bytes(device: torch.device) -> int:
    """Total memory of the GPU, or physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(estimate: dict[str, int], device: torch.device, checkpointing: bool) -> None:
    """``ValueError`` when the estimate exceeds 90% of the device's memory."""
    total, have = sum(estimate.values()), available_bytes(device)
    if total > 0.9 * have:
        parts = ", ".join(f"{k} {gib(v)}" for k, v in estimate.items())
        fixes = "lower batch_size or seq_len, raise grad_accum, "
        if not checkpointing:
            fixes += "turn on activation_checkpointing, "
        raise SettingError(f"estimated memory {gib(total)} per process ({parts}) exceeds 90% of "
                         f"the {gib(have)} on {device.type}: {fixes}or use more GPUs "
                         "(torchrun)", "batch_size", "seq_len", "grad_accum",
                         "activation_checkpointing")
