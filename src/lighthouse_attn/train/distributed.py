"""Process-group setup, full state dicts of sharded models, and the few collectives the
trainer needs.

Launched by ``torchrun`` (``WORLD_SIZE > 1``) the trainer shards the model with FSDP2
(``parallelize.py``) for data parallelism (NCCL on GPU, gloo on CPU); a plain ``python``
launch runs one process without a process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..runtime import resolve_device
from ..settings import SettingError


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs: ``rank`` of ``world_size`` on ``device``; with context
    parallelism, the ranks form a (data parallel ``dp_size``) x (context parallel ``cp_size``)
    mesh, ``rank = dp_rank * cp_size + cp_rank``, and ``cp_group`` holds the ranks that share
    each sequence."""

    rank: int
    world_size: int
    device: torch.device
    cp_size: int = 1
    cp_group: object = None

    @property
    def cp_rank(self) -> int:
        return self.rank % self.cp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.cp_size

    @property
    def dp_size(self) -> int:
        return self.world_size // self.cp_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mean(self, x: Tensor) -> Tensor:
        """Mean of the scalar tensor ``x`` over processes."""
        if self.distributed:
            x = x.clone()
            dist.all_reduce(x)
            x /= self.world_size
        return x

    def any(self, flag: bool) -> bool:
        """True if ``flag`` is true on any process."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device_preference: str = "auto", context_parallel: int = 1) -> DistEnv:
    """Join the ``torchrun`` process group if there is one (NCCL on GPU, gloo on CPU), and
    with ``context_parallel > 1`` build the (dp, cp) mesh. ``ValueError`` when the process
    count is not a multiple of ``context_parallel``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if context_parallel < 1 or world % context_parallel:
        raise SettingError(f"context_parallel {context_parallel} must divide the {world} "
                           f"process{'es' * (world != 1)}: launch a multiple of it with torchrun "
                           "--nproc-per-node", "context_parallel")
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    group = None
    if context_parallel > 1:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (world // context_parallel, context_parallel),
                                mesh_dim_names=("dp", "cp"))
        group = mesh["cp"].get_group()
    return DistEnv(rank, world, device, context_parallel, group)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded CPU state dicts of the model and optimizer (optimizer state keyed by
    parameter name), complete on rank 0 (empty on the others). Collective."""
    return (get_model_state_dict(model, options=_FULL),
            get_optimizer_state_dict(model, optimizer, options=_FULL))


def full_model_state_dict(model: nn.Module) -> dict:
    """Unsharded CPU model state dict, complete on rank 0. Collective."""
    return get_model_state_dict(model, options=_FULL)


def load_full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer,
                          model_state: dict, optimizer_state: dict) -> None:
    """Load full state dicts (every process passes the same ones) into a possibly sharded
    model and its optimizer. Collective."""
    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(model, model_state, options=opts)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=opts)


def grad_norm_value(norm: Tensor) -> float:
    """A clipped-gradient norm (a replicated DTensor under FSDP2) as a float."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
