"""What every benchmark shares: the environment record (versions, device) and CUDA-event timing."""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..environment import device_name, versions
from ..settings import SettingError


def environment() -> dict:
    """Device and library versions, stored with every result."""
    env = {**versions(), "device": device_name()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(sm_count=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version())
    if importlib.util.find_spec("triton") is not None:
        from ..ops.triton.launch import DIRECT

        env["triton_launch"] = "direct" if DIRECT else "jit"  # ops/triton/launch.py
    return env


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def warm_up_gpu(seconds: float = 3.0) -> None:
    """Run matrix products for a few seconds so clocks settle before the first timing."""
    if not torch.cuda.is_available():
        return
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a @ a
        sync()


def time_ms(fn: Callable[[], object], warmup: int = 2, repeats: int = 10,
            budget_ms: float = 20_000.0) -> dict:
    """Median (and min/max) wall time of ``fn`` in ms over ``repeats`` runs after ``warmup``,
    with CUDA events on a GPU; fewer repeats (at least 3) when one run is long."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    while len(times) < repeats:
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 3 and sum(times) > budget_ms:
            break
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": len(times)}


def steady_ms(fn: Callable[[], object], steps: int, repeats: int = 10) -> dict:
    """Median time per call (ms) of ``steps`` calls issued back to back, over ``repeats``
    samples, with CUDA events: the host queues work ahead of the GPU, as it does in a training
    step where the model's other work hides host dispatch. ``time_ms`` syncs after every call,
    so its figure also holds the host's time to issue the call's first kernels."""
    if not torch.cuda.is_available():
        raise ValueError("steady_ms times CUDA work; use time_ms on the CPU")
    fn()
    sync()
    times: list[float] = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / steps)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": repeats, "steps": steps}


def sleep_cycles(ms: float) -> int:
    """GPU clock cycles that ``torch.cuda._sleep`` takes to keep the GPU busy ``ms``
    milliseconds (measured once on a 1M-cycle sleep)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(1_000_000)
    end.record()
    end.synchronize()
    return int(1_000_000 * ms / start.elapsed_time(end))


def host_ms(fn: Callable[[], object], steps: int, busy_cycles: int) -> float:
    """The host's own time (ms) to issue one call of ``fn``: ``steps`` calls issued behind a
    GPU sleep of ``busy_cycles`` (long enough that the GPU is still busy when they are all
    queued), so no launch waits for the GPU. A call that synchronises shows up as the sleep."""
    torch.cuda._sleep(busy_cycles)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / steps * 1e3


def cuda_graph(fn: Callable[[], object], warmup: int = 3) -> tuple[Callable[[], None], object]:
    """``fn`` captured once in a CUDA graph, after ``warmup`` calls on a side stream (where
    lazy initialisation and first allocations happen): ``(replay, outputs)``, ``outputs``
    being the captured call's result, which every replay overwrites in place."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph.replay, outputs


def peak_memory_mib(fn: Callable[[], object]) -> float | None:
    """Peak GPU memory allocated while ``fn`` runs, above what was allocated before (MiB)."""
    if not torch.cuda.is_available():
        return None
    sync()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def output_path(out: str, default_name: str) -> Path:
    """``out`` as a file if it ends in ``.json``, else a directory holding ``default_name``."""
    p = Path(out)
    return p if p.suffix == ".json" else p / default_name


GPU_SEQ_LEN = 98_304
"""The paper's context length: the default of the GPU benchmarks."""


def default_seq_len(seq_len: int | None, device_type: str, command: str) -> int:
    """``seq_len`` as given; else the paper's 98,304 on a GPU. On a CPU a length must be given
    (``ValueError``): 98K-token steps there take hours, not a benchmark."""
    if seq_len is not None:
        return seq_len
    if device_type == "cpu":
        raise SettingError(f"{command} times GPU training steps at {GPU_SEQ_LEN:,} tokens "
                           "by default, hours per step on a CPU: set seq_len (e.g. seq_len "
                           "4096) to time a CPU-sized step", "seq_len")
    return GPU_SEQ_LEN
