"""Compile every Triton kernel of the fast path for a CUDA target without a GPU.

Catches front-end and lowering errors of the installed Triton (e.g. the GPU image's 3.6)
before spending device time:  python scripts/check_triton_compile.py [--arch 90]
"""

import argparse
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lighthouse_attn.ops.triton import scores, select, window  # noqa: F401


def sig(fn, types: dict, consts: dict) -> ASTSource:
    names = fn.arg_names
    signature = {n: ("constexpr" if n in consts else types.get(n, "i32")) for n in names}
    return ASTSource(fn=fn, signature=signature, constexprs=consts)


def cases():
    bf = {n: "*bf16" for n in ("a_ptr", "b_ptr", "x0", "x1", "x2", "g0", "g1", "g2", "o0",
                               "o1", "o2")}
    for dt in ("bf16", "fp32"):
        yield "row_norms", sig(scores._row_norms_kernel,
                               {"a_ptr": f"*{dt}", "b_ptr": f"*{dt}", "oa_ptr": "*fp32",
                                "ob_ptr": "*fp32"}, {"BLOCK_R": 32, "BLOCK_D": 128})
    for L, p in ((2, 2), (3, 4), (4, 4), (4, 2), (3, 8)):
        log2p = p.bit_length() - 1
        C = 512
        yield f"select L={L} p={p}", sig(
            select._select_kernel,
            {"sq_ptr": "*fp32", "sk_ptr": "*fp32", "level_ptr": "*i64", "index_ptr": "*i64",
             "map_ptr": "*i32", "work_ptr": "*i32"},
            {"L": L, "P": p, "LOG2P": log2p, "BLOCK_C": C, "NMAX": max(C, 128 * p),
             "TILE_": 128, "HALF_": 64, "DIGIT": 4})
        yield f"map L={L} p={p}", sig(window._map_kernel,
                                      {"level_ptr": "*i64", "index_ptr": "*i64",
                                       "map_ptr": "*i32"},
                                      {"L": L, "LOG2P": log2p, "BLOCK": 1024})
        rows, skip = window.pool_plan(p, L, 128)
        for shift, mean in ((0, True), (1, False)):
            consts = {"SHIFT": shift, "MEAN": mean, "L": L, "P": p, "LOG2P": log2p,
                      "BLOCK_D": 128, "ACC": triton.language.float32}
            yield f"pool L={L} p={p} shift={shift}", sig(
                window._pool_kernel, {**bf, "map_ptr": "*i32"},
                {**consts, "ROWS": rows, "SKIP_EMPTY": skip})
            yield f"spread L={L} p={p} shift={shift}", sig(
                window._spread_kernel, {**bf, "map_ptr": "*i32"},
                {**consts, "ROWS": window._rows(window.SPREAD_ROWS, p, L, 128)})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    failed = 0
    for name, src in cases():
        try:
            k = triton.compile(src, target=target)
            meta = k.metadata
            print(f"ok    {name:40s} regs={getattr(k, 'n_regs', '?')} "
                  f"spills={getattr(k, 'n_spills', '?')} shared={meta.shared}")
        except Exception as err:  # report every failure, not only the first
            failed += 1
            print(f"FAIL  {name}: {type(err).__name__}: {str(err).splitlines()[-1][:300]}")
    print(f"triton {triton.__version__}, sm_{args.arch}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
