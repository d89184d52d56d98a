"""Compile every Triton kernel of the fast path for a CUDA target without a GPU.

Catches front-end and lowering errors of the installed Triton (e.g. the GPU image's 3.6)
before spending device time:  python scripts/check_triton_compile.py [--arch 90]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lighthouse_attn.ops.triton import flash_backward, gather_scatter, scores, select  # noqa: F401


def sig(fn, types: dict, consts: dict, aligned: tuple = ()) -> ASTSource:
    """``aligned``: arguments the launcher would see as multiples of 16 (pointers, strides)."""
    names = fn.arg_names
    signature = {n: ("constexpr" if n in consts else types.get(n, "i32")) for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    return ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)


def flash_backward_cases(configs: list | None = None):
    """The deterministic attention backward; ``configs``: [(dtype, D, dkdv, dq)] to compile
    instead of the defaults (options: warps, stages)."""
    fb = flash_backward
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if configs is None:
        configs = [(dt, D, *fb.default_configs(D, dtypes[dt]))
                   for dt, D in (("bf16", 128), ("bf16", 64), ("bf16", 16), ("bf16", 256),
                                 ("fp16", 128), ("fp32", 128), ("fp32", 32))]
    for dt, D, dkdv, dq in configs:
        prec = "tf32x3" if dt == "fp32" else "tf32"
        for name, fn, cfg in (("dkdv", fb._dkdv_kernel, dkdv), ("dq", fb._dq_kernel, dq)):
            rows = {"q": cfg.block_m, "do": cfg.block_m, "k": cfg.block_n, "v": cfg.block_n,
                    "dq": cfg.block_m, "dk": cfg.block_n, "dv": cfg.block_n}
            types = {f"{t}_desc": f"tensordesc<{dt}[1,1,{r},{D}]>" for t, r in rows.items()}
            types.update(lse2_ptr="*fp32", delta_ptr="*fp32", qk_scale="fp32", scale="fp32")
            consts = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "D": D,
                      "PRECISION": prec}
            yield (f"flash_bwd {name} {dt} D={D} "
                   f"{cfg.block_m}x{cfg.block_n} w{cfg.num_warps} s{cfg.num_stages}",
                   sig(fn, types, consts, ("lse2_ptr", "delta_ptr", "S_PAD")),
                   {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
        yield f"flash_bwd delta {dt} D={D}", sig(
            fb._delta_kernel, {"o_ptr": f"*{dt}", "do_ptr": f"*{dt}", "lse_ptr": "*fp32",
                               "delta_ptr": "*fp32", "lse2_ptr": "*fp32"},
            {"BLOCK": fb.DELTA_BLOCK, "D": D},
            ("o_ptr", "do_ptr", "lse_ptr", "delta_ptr", "lse2_ptr", "S_PAD", "sob", "soh", "sos",
             "sdb", "sdh", "sds")), {"num_warps": 4}


def cases():
    bf = {n: "*bf16" for n in ("a_ptr", "b_ptr", "x0", "x1", "x2", "g0", "g1", "g2", "o0",
                               "o1", "o2", "c0", "c1", "c2")}
    for dt, win in (("bf16", None), ("fp32", None), ("bf16", 16), ("bf16", 64), ("fp32", 16)):
        means = win is not None
        yield f"row_norms {dt} window={win}", sig(
            scores._row_norms_kernel,
            {"a_ptr": f"*{dt}", "b_ptr": f"*{dt}", "oa_ptr": "*fp32", "ob_ptr": "*fp32",
             "ma_ptr": f"*{dt}" if means else "*fp32", "mb_ptr": f"*{dt}" if means else "*fp32"},
            {"WIN": win or scores.BLOCK_R, "ROWS": scores.BLOCK_R, "MEANS": means,
             "BLOCK_D": 128, "ACC": triton.language.float32},
            ("a_ptr", "b_ptr", "ma_ptr", "mb_ptr", "D", "N", "sab", "sah", "san", "sbb",
             "sbh", "sbn")), {"num_warps": scores.MEANS_WARPS if means else 4}
    yield from flash_backward_cases()
    for L, p in ((2, 2), (3, 4), (4, 4), (4, 2), (3, 8)):
        log2p = p.bit_length() - 1
        C = 512
        sel = L != 3
        for causal, pre in ((False, False), (True, False), (True, True)):
            yield f"select L={L} p={p} sel={sel} causal={causal} prefix={pre}", sig(
                select._select_kernel,
                {"sq_ptr": "*fp32", "sk_ptr": "*fp32", "pq_ptr": "*fp32", "pk_ptr": "*fp32",
                 "level_ptr": "*i64", "index_ptr": "*i64", "map_ptr": "*i32",
                 "work_ptr": "*i32"},
                {"L": L, "P": p, "LOG2P": log2p, "BLOCK_C": C, "NMAX": max(C, 128 * p),
                 "TILE_": 128, "HALF_": 64, "DIGIT": 4, "SEL": sel, "FILL": 1024,
                 "CAUSAL": causal, "SEG": 16, "PRE": pre}), {"num_warps": select.WARPS}
        yield f"map L={L} p={p}", sig(gather_scatter._map_kernel,
                                      {"level_ptr": "*i64", "index_ptr": "*i64",
                                       "map_ptr": "*i32"},
                                      {"L": L, "LOG2P": log2p, "BLOCK": 1024})
        gs = gather_scatter
        rows = max(gs._span(gs.POOL_ROWS, 128), p ** (L - 1))
        srows = gs._span(gs.SPREAD_ROWS, 128)
        tail = p ** (L - 1) - 1  # rows past a chunk's end (context parallelism)
        for shift, mean, given, tail_rows in ((0, True, 0, 0), (0, True, 2, 0), (1, False, 0, 0),
                                              (1, False, 0, tail)):
            consts = {"SHIFT": shift, "MEAN": mean, "L": L, "P": p, "LOG2P": log2p,
                      "BLOCK_D": 128, "ACC": triton.language.float32, "TAIL": tail_rows}
            name = f"L={L} p={p} shift={shift} given={given} tail={tail_rows}"
            yield f"pool {name}", sig(
                gs._pool_kernel, {**bf, "tail": "*bf16", "map_ptr": "*i32"},
                {**consts, "ROWS": rows, "GIVEN": given}, aligned(gs._pool_kernel)), {
                    "num_warps": gs.POOL_WARPS}
            if given:  # the spread reads no coarsest means
                continue
            yield f"spread {name}", sig(
                gs._spread_kernel, {**bf, "tail": "*fp32", "map_ptr": "*i32"},
                {**consts, "ROWS": srows}, aligned(gs._spread_kernel)), {
                    "num_warps": gs.spread_warps(3 - 2 * shift, srows, 128)}


def aligned(fn) -> tuple:
    """The pool/spread arguments that are multiples of 16 at D = 128 (pointers, lengths and
    strides), as the launcher sees them in the benchmarks."""
    return tuple(n for n in fn.arg_names if n[0] in "xgoc" and n[1:].isdigit()
                 or n in ("map_ptr", "N", "M", "S", "D")
                 or n[0] == "s" and n[-1] in "bhns" and n[1].isdigit())


def resource_usage(kernel, arch: int) -> tuple[str, str]:
    """Registers and spill bytes from ptxas -v (the compiled object only knows them once
    loaded on a GPU)."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(kernel.asm["ptx"])
        log = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", path,
                              "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return (regs.group(1) if regs else "?"), (spills.group(1) if spills else "?")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    failed = 0
    for name, src, *options in cases():
        try:
            k = triton.compile(src, target=target, options=options[0] if options else None)
            regs, spills = resource_usage(k, args.arch)
            print(f"ok    {name:52s} regs={regs} spills={spills} shared={k.metadata.shared}")
        except Exception as err:  # report every failure, not only the first
            failed += 1
            print(f"FAIL  {name}: {type(err).__name__}: {str(err).splitlines()[-1][:300]}")
    print(f"triton {triton.__version__}, sm_{args.arch}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
