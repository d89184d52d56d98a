"""Is a steady step bound by the host or by the GPU? Time forward+backward steps issued back
to back (``steady_ms``) alone, and again behind a GPU sleep kernel that makes every step
longer on the GPU than the host needs to issue it. With the sleep, the host always runs
ahead, so (sleep + step) - (sleep alone) is the step's GPU time with its kernel gaps but
without any wait for the host. If it equals the plain steady time, that time was GPU-bound.
"host_ms" is the host's own time to issue one step, taken while the GPU is still busy with a
long sleep (so no launch waits for a free slot in the queue).

    python benchmarks/host_bound_probe.py --seq-len 32768 --topk 512 --out host_bound.json
"""

import json
import statistics

import torch
from layer_case import case_arguments, case_of

from lighthouse_attn.bench.common import host_ms, sleep_cycles, steady_ms, warm_up_gpu


def main() -> None:
    ap = case_arguments("host_bound.json")
    ap.add_argument("--sleep-us", type=float, default=1500.0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    warm_up_gpu(2)
    c = case_of(args)
    torch.cuda._sleep(1000)  # the first launch pays for lazy set-up: not part of the rate
    torch.cuda.synchronize()
    cycles = sleep_cycles(args.sleep_us / 1e3)

    def sleep():
        torch.cuda._sleep(cycles)

    res = {"device": torch.cuda.get_device_name(), "N": c.N, "K": args.topk, "S": c.S,
           "sleep_us": args.sleep_us, "rounds": []}
    for _ in range(args.rounds):
        row = {"sleep": steady_ms(sleep, 10, 5)["median_ms"]}
        for name, step in (("layer", c.layer), ("inner", c.inner)):
            row[name] = steady_ms(step, 10, 5)["median_ms"]
            row[f"{name} host_ms"] = host_ms(step, 10, cycles * 20)
            row[f"{name} behind sleep"] = steady_ms(lambda s=step: (sleep(), s()), 10,
                                                    5)["median_ms"] - row["sleep"]
        res["rounds"].append({k: round(v, 4) for k, v in row.items()})
    med = {k: statistics.median(r[k] for r in res["rounds"]) for k in res["rounds"][0]}
    res["median_ms"] = {k: round(v, 4) for k, v in med.items()}
    res["ratio_steady"] = round(med["layer"] / med["inner"], 4)
    res["ratio_behind_sleep"] = round(med["layer behind sleep"] / med["inner behind sleep"], 4)
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
