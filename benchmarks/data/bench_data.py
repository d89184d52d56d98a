"""Data pipeline benchmarks on the machine that runs them (a CPU is enough).

1. ``data prepare`` throughput (MB of input text per second, per worker) for the byte tokenizer
   and a byte-level BPE tokenizer (32,000 tokens, trained here on a sample of the input), with
   one worker and with every core; the input is the Python standard library's source as eight
   ``.jsonl`` files (one record per source file), in units of 4 MB; with one worker the
   ``tokenizers`` library is kept to one thread (``TOKENIZERS_PARALLELISM=false``), as each
   worker of a pool is.
2. Loader throughput (tokens/s of ``BatchLoader`` over ``ShardedSequences``: seeded shuffle,
   positioned reads, int64 batches) at 131,072 x 1 and 8,192 x 16 per step.
3. Peak resident memory of a process that opens and checks (CRC32) a synthetic
   10-billion-token shard set (sparse files: 40 shards of 250M uint16 tokens, 20 GB) and reads
   200 random 131,072-token batches from it.

    python benchmarks/data/bench_data.py OUT_DIR     # writes OUT_DIR/data.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__}


def prepare_throughput(work: Path) -> list[dict]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lighthouse_attn.data import prepare as prep
    from lighthouse_attn.data import stdlib_root
    from lighthouse_attn.data.prepare import prepare

    prep.UNIT_BYTES = 1 << 22  # units of 4 MB, so that this 33 MB input spreads over cores

    root = Path(stdlib_root())
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    texts = [p.read_text(errors="replace") for p in files]
    inputs = work / "input"
    inputs.mkdir()
    for i in range(8):  # the standard library's source as 8 .jsonl files, one file a record
        with open(inputs / f"part-{i}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts[i::8])
    mb = sum(p.stat().st_size for p in inputs.iterdir()) / 1e6
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts[:400], trainers.BpeTrainer(
        vocab_size=32000, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bpe.save(str(work / "bpe.json"))
    rows = []
    for name, spec in (("bytes", "bytes"), ("bpe-32k", str(work / "bpe.json"))):
        for workers in sorted({1, os.cpu_count() or 1}):
            out = work / f"prep-{name}-{workers}"
            t0 = time.perf_counter()
            m = prepare([str(inputs)], out, tokenizer=spec, workers=workers, progress=False,
                        echo=lambda *_: None)
            dt = time.perf_counter() - t0
            rows.append({"tokenizer": name, "workers": workers, "input_mb": round(mb, 1),
                         "tokens": m["tokens"], "seconds": round(dt, 2),
                         "mb_per_s": round(mb / dt, 2),
                         "mb_per_s_per_worker": round(mb / dt / workers, 2),
                         "bytes_per_token": round(mb * 1e6 / m["tokens"], 2)})
            print(rows[-1], flush=True)
    return rows


def loader_throughput(prepared: Path) -> list[dict]:
    from lighthouse_attn.data import BatchLoader, ShardedSequences

    rows = []
    for seq_len, batch in ((131072, 1), (8192, 16)):
        seqs = ShardedSequences(prepared, seq_len, progress=False)
        loader = BatchLoader(seqs, global_batch=batch, seed=0)
        steps = max(1, min(200, len(seqs) // batch))
        t0 = time.perf_counter()
        for _ in range(steps):
            loader.next_step()
        dt = time.perf_counter() - t0
        rows.append({"seq_len": seq_len, "batch": batch, "steps": steps,
                     "tokens_per_s": round(steps * batch * seq_len / dt)})
        print(rows[-1], flush=True)
    return rows


def synthetic_shards(path: Path, shards: int = 40, tokens: int = 250_000_000) -> None:
    """Sparse all-zero shards and their manifest (CRC32 computed once: they are alike)."""
    from lighthouse_attn.data.shards import FORMAT, crc32_of_file
    from lighthouse_attn.data.tokenizer import TOKENIZER

    path.mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        with open(path / f"shard-{i:06d}-0000.bin", "wb") as f:
            f.truncate(tokens * 2)
    crc = crc32_of_file(path / "shard-000000-0000.bin")
    manifest = {"format": FORMAT, "tokenizer": TOKENIZER.identity(), "dtype": "uint16",
                "split": "train", "tokens": shards * tokens, "documents": 0,
                "shards": [{"file": f"shard-{i:06d}-0000.bin", "tokens": tokens,
                            "documents": 0, "crc32": crc} for i in range(shards)]}
    (path / "manifest.json").write_text(json.dumps(manifest))


_RSS_CHILD = """
import json, os, resource, sys, time
from lighthouse_attn.data import BatchLoader, ShardedSequences

def rss_mib():  # resident now
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

base = rss_mib()
t0 = time.perf_counter()
seqs = ShardedSequences(sys.argv[1], 131072, verify=True, progress=False)
check_s = time.perf_counter() - t0
after_check = rss_mib()
loader = BatchLoader(seqs, global_batch=1, seed=0)
t0 = time.perf_counter()
for _ in range(200):
    loader.next_step()
read_s = time.perf_counter() - t0
print(json.dumps({"tokens": seqs.num_tokens, "samples": len(seqs), "check_s": check_s,
                  "rss_after_imports_mib": base, "rss_after_check_mib": after_check,
                  "rss_after_reads_mib": rss_mib(),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "read_tokens_per_s": 200 * 131072 / read_s}))
"""


def memory_at_10b(work: Path) -> dict:
    shards = work / "synthetic-10b"
    synthetic_shards(shards)
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(shards)], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["check_gb_per_s"] = round(result["tokens"] * 2 / 1e9 / result["check_s"], 2)
    print(result, flush=True)
    return result


def main() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/data/results")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"machine": machine(), "prepare": prepare_throughput(work),
                  "loader": loader_throughput(work / "prep-bytes-1"),
                  "memory_10b_tokens": memory_at_10b(work)}
    result["peak_rss_under_1_gib"] = result["memory_10b_tokens"]["peak_rss_mib"] < 1024
    (out / "data.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'data.json'}")


if __name__ == "__main__":
    sys.exit(main())
