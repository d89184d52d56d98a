"""Run-to-run spread on the GPU: the same arm, seed and settings trained twice (h200/runs/ and
h200/reruns/, at two times, each on an H200) diverge: most likely GPU kernels that
accumulate in a varying order (atomics) make steps differ in the last bits, and training
amplifies the difference.
Writes h200/reruns.json: held-out loss of both at every step both scored (under dense
attention, and under Lighthouse in stage 1), and the differences.

    python benchmarks/quality/reruns.py
"""

import json
from pathlib import Path

HERE = Path(__file__).parent / "h200"


def scores(run: Path) -> dict[int, dict]:
    return {r["step"]: {k: r[k] for k in ("val_dense", "val_lighthouse") if k in r}
            for r in map(json.loads, open(run / "metrics.jsonl")) if "val_dense" in r}


def main() -> None:
    what = " ".join(__doc__.split("Writes")[0].split())
    out = {"device": "NVIDIA H200", "what": what, "runs": {}}
    for rerun in sorted((HERE / "reruns").iterdir()):
        first, second = scores(HERE / "runs" / rerun.name), scores(rerun)
        steps = sorted(set(first) & set(second))
        out["runs"][rerun.name] = [
            {"step": s, **{f"{k}_{which}": v[k] for which, v in (("first", first[s]),
                                                                 ("rerun", second[s]))
                           for k in v},
             **{f"{k}_difference": second[s][k] - first[s][k] for k in second[s]}}
            for s in steps]
        last = out["runs"][rerun.name][-1]
        print(f"{rerun.name}: step {last['step']}: " + ", ".join(
            f"{k} {last[k + '_first']:.4f} then {last[k + '_rerun']:.4f} "
            f"({last[k + '_difference']:+.4f})" for k in ("val_dense", "val_lighthouse")
            if k + "_first" in last))
    (HERE / "reruns.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
