import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
if not torch.cuda.is_available():
    # run the Triton kernels on the CPU interpreter; must be set before they are defined
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may be absent
def pytest_xdist_auto_num_workers(config):
    """Workers for ``-n auto`` (pyproject's addopts): one per CPU core, at most 4 (each imports
    torch), whole files to a worker; none with a GPU, whose tests share the one device."""
    if torch.cuda.is_available():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def rand_qkv(B=1, H=2, Hkv=None, N=512, D=8, dtype=torch.float32, seed=0, requires_grad=False,
             device="cpu"):
    """Random (never zero) q (B,H,N,D), k/v (B,Hkv,N,D), the same on every device."""
    g = torch.Generator().manual_seed(seed)
    Hkv = Hkv or H
    shapes = ((B, H, N, D), (B, Hkv, N, D), (B, Hkv, N, D))
    return tuple(torch.randn(*s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
                 .requires_grad_(requires_grad) for s in shapes)
