"""Host/GPU timeline of one Lighthouse layer step (forward+backward): when each kernel is
launched on the host and when it runs on the GPU, and where the GPU waits for the host.

    python benchmarks/timeline.py --seq-len 32768 --topk 512 --out timeline_32k.json

The step is traced with torch.profiler (which slows the host a little); "gpu_idle_us" sums the
gaps between consecutive kernels, the time the GPU waits for the host. A second section times
the step's host functions without the profiler (perf_counter around each, no sync).
"""

import json
import os
import tempfile
import time

import torch
from host_timing import timed_functions
from layer_case import case_arguments, case_of
from torch.profiler import ProfilerActivity, profile, record_function

import lighthouse_attn.ops.api as op_attention
import lighthouse_attn.ops.triton.attention as tri
from lighthouse_attn.bench.common import warm_up_gpu


def trace_step(step, steps: int = 3, phases: tuple[str, ...] = ()) -> dict:
    """The last of ``steps`` traced calls of ``step``: its kernels (when launched, when run),
    the GPU's busy and idle time, and for each name in ``phases`` (a ``record_function``
    range inside the step) the same for the kernels launched inside that range, with the
    range's host time."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            with record_function("STEP"):
                step()
            torch.cuda.synchronize()
    path = os.path.join(tempfile.mkdtemp(), "trace.json")
    prof.export_chrome_trace(path)
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    marks = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("name") == "STEP" and e.get("cat") == "user_annotation")
    t0, t1 = marks[-1]  # the last step
    launches = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver")
                and "correlation" in e.get("args", {})}
    kernels = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memset")
                      and launches.get(e["args"].get("correlation"), -1) >= t0
                      and launches.get(e["args"].get("correlation"), t1 + 1) <= t1),
                     key=lambda e: e["ts"])
    rows, idle, prev_end = [], 0.0, None
    for e in kernels:
        launch = launches[e["args"]["correlation"]]
        if prev_end is not None:
            idle += max(0.0, e["ts"] - prev_end)
        prev_end = e["ts"] + e["dur"]
        rows.append({"kernel": e["name"][:60], "launched_us": round(launch - t0, 1),
                     "start_us": round(e["ts"] - t0, 1), "dur_us": round(e["dur"], 1)})
    out = {"host_step_us": round(t1 - t0, 1),
           "gpu_end_us": round(prev_end - t0, 1) if prev_end else None,
           "gpu_busy_us": round(sum(r["dur_us"] for r in rows), 1),
           "gpu_idle_us": round(idle, 1)}
    for name in phases:
        span = next(((e["ts"] - t0, e["ts"] + e["dur"] - t0) for e in events
                     if e.get("name") == name and e.get("cat") == "user_annotation"
                     and t0 <= e["ts"] <= t1), None)
        if span is None:
            raise ValueError(f"no record_function({name!r}) range inside the traced step: "
                             "mark each phase with torch.profiler.record_function")
        out[name] = _phase(rows, *span)
    return {**out, "kernels": rows}


def _phase(rows: list[dict], a: float, b: float) -> dict:
    """Host time of the range ``[a, b]`` (us from the step's start) and the GPU's time on the
    kernels launched inside it: busy, and idle before each (waiting for the host or for the
    previous phase's kernels)."""
    busy = idle = 0.0
    end = None
    for prev, r in zip([None, *rows], rows):
        if not a <= r["launched_us"] <= b:
            continue
        if prev is not None:
            idle += max(0.0, r["start_us"] - prev["start_us"] - prev["dur_us"])
        busy += r["dur_us"]
        end = r["start_us"] + r["dur_us"]
    return {"host_us": round(b - a, 1), "gpu_busy_us": round(busy, 1),
            "gpu_idle_us": round(idle, 1), "gpu_end_us": None if end is None else round(end, 1)}


def host_breakdown(step, steps: int = 100) -> dict:
    """perf_counter totals of the step's host functions, per step (nested totals overlap)."""
    targets = [(op_attention, "check_inputs"), (tri, "_select"), (tri, "scores_qk"),
               (tri, "row_norms_and_means"), (tri, "select_with_map"), (tri, "pool"),
               (tri, "spread"),
               (tri, "cudnn_forward"), (tri, "_cudnn_backward"), (tri, "_one_node_inner"),
               (tri, "lighthouse_triton")]
    with timed_functions(targets) as acc:
        step()
        torch.cuda.synchronize()
        acc.clear()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - t
        torch.cuda.synchronize()
    out = {k: round(v / steps * 1e6, 1) for k, v in acc.items()}
    out["whole step (host)"] = round(total / steps * 1e6, 1)
    return out


def main() -> None:
    args = case_arguments("timeline.json").parse_args()
    case = case_of(args)
    layer, inner = case.layer, case.inner
    for _ in range(5):
        layer()
        inner()
    warm_up_gpu(1)
    res = {"device": torch.cuda.get_device_name(), "N": case.N, "K": args.topk, "S": case.S,
           "deterministic": args.deterministic,
           "layer": trace_step(layer), "inner": trace_step(inner),
           "host_us": host_breakdown(layer)}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    for name in ("layer", "inner"):
        r = res[name]
        print(f"{name}: host {r['host_step_us']} us, GPU end {r['gpu_end_us']} us, busy "
              f"{r['gpu_busy_us']} us, idle {r['gpu_idle_us']} us")
        for row in r["kernels"]:
            print(f"   {row['kernel'][:40]:40s} launched {row['launched_us']:8.1f} start "
                  f"{row['start_us']:8.1f} dur {row['dur_us']:7.1f}")
    print(json.dumps(res["host_us"], indent=1))


if __name__ == "__main__":
    main()
