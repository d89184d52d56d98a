"""Host time spent inside named functions, by wrapping them for the duration of a block, the
median host time of a step, and the set-up of a one-process run (shared by the host-time
scripts beside it: benchmarks/ is on their path)."""

import argparse
import contextlib
import functools
import statistics
import time
from collections import defaultdict


@contextlib.contextmanager
def timed_functions(targets):
    """Inside the block, every call of each ``(module, name)`` in ``targets`` adds its
    ``perf_counter`` time to the yielded dict under ``name`` (seconds; nested calls count in
    both). The functions are restored after the block."""
    acc, saved = defaultdict(float), []
    for mod, name in targets:
        fn = getattr(mod, name)
        saved.append((mod, name, fn))

        @functools.wraps(fn)
        def timed(*a, _fn=fn, _name=name, **kw):
            t = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                acc[_name] += time.perf_counter() - t
        setattr(mod, name, timed)
    try:
        yield acc
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def median_host_ms(fn, cycles_per_ms: int, reps: int = 7, steps: int = 20) -> float:
    """The median over ``reps`` of ``bench.common.host_ms``: the host's own time (ms) per call
    of ``fn``, ``steps`` calls issued behind 20 ms of GPU sleep each (``cycles_per_ms`` from
    ``bench.common.sleep_cycles(1.0)``)."""
    from lighthouse_attn.bench.common import host_ms

    return round(statistics.median(host_ms(fn, steps, cycles_per_ms * 20 * steps)
                                   for _ in range(reps)), 3)


def one_process_parser(default_out: str) -> argparse.ArgumentParser:
    """A parser with ``--out`` and ``--smoke`` (a tiny run on the CPU, under gloo)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--smoke", action="store_true")
    return ap


def start_one_process(smoke: bool) -> str:
    """Start the process group of a ``torchrun --nproc-per-node 1`` run (gloo for a smoke run,
    else NCCL) and return the device the run uses."""
    import torch.distributed as dist

    dist.init_process_group("gloo" if smoke else "nccl")
    return "cpu" if smoke else "cuda"
