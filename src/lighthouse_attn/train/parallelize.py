"""How a model is prepared for training, in torchtitan's order: activation checkpointing, then
``torch.compile``, then FSDP2 sharding. Used by the trainer and by ``bench train``.

Every model of the project exposes its decoder blocks as ``model.layers`` (``models/
interface.py``); each step below works block by block and leaves the state-dict keys as they
were (the checkpoint wrapper's prefix is hidden from state dicts), so checkpoints do not depend
on how a run was parallelised.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    checkpoint_wrapper,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder block in the backward pass (non-reentrant checkpointing)."""
    for i, block in enumerate(model.layers):
        model.layers[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def apply_compile(model: nn.Module) -> None:
    """``torch.compile`` each decoder block (the Lighthouse op compiles without graph breaks)."""
    for block in model.layers:
        block.compile()


def apply_fsdp(model: nn.Module) -> None:
    """FSDP2 data parallelism: shard each decoder block, then the root (embeddings, head).
    Parameters stay fp32 (compute runs under bf16 autocast); gradients are reduced in fp32."""
    policy = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
    for block in model.layers:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def parallelize(model: nn.Module, *, activation_checkpointing: bool = False,
                compile: bool = False, shard: bool = False) -> nn.Module:
    """Apply the requested steps in order (checkpointing -> compile -> FSDP2); returns
    ``model``, changed in place."""
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    if shard:
        apply_fsdp(model)
    return model
