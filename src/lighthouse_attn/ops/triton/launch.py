"""Kernel launches with less host work than triton's JIT launcher.

``fast(kernel)[grid](*args, CONST=..., num_warps=...)`` launches like ``kernel[grid](...)``.
The first call with a given specialization goes through triton (which compiles and launches)
and keeps the compiled kernel; later calls hand the arguments straight to its launcher. Triton's
launcher binds the arguments and rebuilds its cache key on every call: 35 us for the 30
arguments of the pool kernel on an H100 host, against 11 us straight
(benchmarks/results/h100/launch_probe.json). At 32K tokens a layer is bound by such host work.

Our key is at least as fine as triton's specialization (tensors: dtype and 16-byte alignment;
other arguments: their exact values, or for tensor descriptors dtype, block shape and padding),
so a kept kernel only ever runs arguments it was compiled for. Where triton's launcher would
only add empty scratch buffers, its C entry is called straight, and leading tensor arguments
(all of ours but the descriptor kernels) go to it as their device addresses. The direct path is
used only where triton's own launch makes the call it mimics (checked once at import), never
under ``TRITON_INTERPRET=1`` or with launch hooks set, and never when
``LIGHTHOUSE_TRITON_LAUNCH=jit``. Launches into a CUDA graph being captured work the same way.
"""

from __future__ import annotations

import functools
import inspect
import operator
import os

import torch

try:
    import triton
    from triton.runtime.jit import JITFunction
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - the Triton backend is unavailable anyway
    triton = None

_CALL = ("kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata, "
         "launch_metadata")


def _direct_supported() -> bool:
    if triton is None or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    if os.environ.get("LIGHTHOUSE_TRITON_LAUNCH", "direct") == "jit":
        return False
    if not hasattr(triton, "knobs"):
        return False
    try:
        return _CALL in " ".join(inspect.getsource(JITFunction.run).split())
    except (OSError, TypeError):
        return False


DIRECT = _direct_supported()


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` (``triton.cdiv`` goes through a slower constexpr wrapper on the host)."""
    return -(-a // b)


def accumulator(dtype: torch.dtype):
    """Triton accumulator type for data of ``dtype``: fp64 for fp64, fp32 otherwise (as the
    reference path)."""
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (``n >= 1``)."""
    return 1 << (n - 1).bit_length()


def spec_key(arg) -> object:
    """What triton specializes a runtime argument on, or finer."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, bool) or arg is None:
        return arg
    if isinstance(arg, int):
        return 1 if arg == 1 else (arg % 16 == 0, -2**31 <= arg < 2**31, arg < 2**63)
    if isinstance(arg, float):
        return float
    if triton is not None and isinstance(arg, TensorDescriptor):
        return ("desc", arg.base.dtype, tuple(arg.block_shape), arg.padding)
    raise TypeError(f"no launch key for a {type(arg).__name__} argument")


def _active(hook) -> bool:
    """A launch hook that does something (triton 3.6 keeps empty ``HookChain`` objects)."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _hooked() -> bool:
    hooks = triton.knobs.runtime
    return _active(hooks.launch_enter_hook) or _active(hooks.launch_exit_hook)


_LAUNCH = ("self.launch(gridX, gridY, gridZ, stream, function, self.launch_cooperative_grid, "
           "self.launch_pdl, global_scratch, profile_scratch, *args)")


def _raw_launch(run):
    """The compiled launcher's C entry, where its Python wrapper would only add empty scratch
    buffers (checked against the wrapper's source), else ``None``."""
    launch = getattr(run, "launch", None)
    if (launch is None or getattr(run, "global_scratch_size", 1)
            or getattr(run, "profile_scratch_size", 1)):
        return None
    try:
        src = " ".join(inspect.getsource(type(run).__call__).split())
    except (OSError, TypeError):
        return None
    if _LAUNCH not in src:
        return None
    flags = (run.launch_cooperative_grid, run.launch_pdl, None, None)
    return lambda g0, g1, g2, stream, function, *args: launch(g0, g1, g2, stream, function,
                                                            *flags, *args)


class FastKernel:
    """A ``@triton.jit`` kernel launched through :mod:`launch` (module doc).

    The key of a call: the dtype and 16-byte alignment of every tensor, the exact value of
    every other argument (finer than triton's specialization), and the keyword arguments.
    Which positions hold tensors is learnt once per argument count (our call sites never
    change it; a non-tensor where a tensor was raises ``TypeError``)."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.names = list(kernel.arg_names) if DIRECT else []
        self.kept: dict = {}
        self.layouts: dict = {}  # number of args -> item getters, descriptor flag, lead

    def __getitem__(self, grid: tuple):
        return lambda *args, **kw: self.launch(grid, args, kw)

    def _layout(self, args: tuple):
        layout = self.layouts.get(len(args))
        if layout is None:
            tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
            others = [i for i in range(len(args)) if i not in tensors]
            descs = any(isinstance(args[i], TensorDescriptor) for i in others)
            lead = len(tensors) if tensors == list(range(len(tensors))) and not descs else 0
            layout = self.layouts[len(args)] = (_getter(tensors), _getter(others), descs,
                                                lead)
        return layout

    def launch(self, grid: tuple, args: tuple, kw: dict) -> None:
        if not DIRECT or _hooked():
            self.kernel[grid](*args, **kw)
            return
        get_tensors, get_others, descs, lead = self._layout(args)
        tensors = get_tensors(args)
        others = get_others(args)
        if descs:  # descriptors are keyed like triton keys them; the rest by value
            others = tuple(map(spec_key, others))
        ptrs = tuple(map(_data_ptr, tensors))
        aligned = functools.reduce(operator.or_, ptrs, 0) % 16 == 0  # all of them
        device = torch.cuda.current_device()
        key = (device, tuple(map(_dtype, tensors)),
               aligned or tuple(p % 16 == 0 for p in ptrs), others, tuple(kw.items()))
        kept = self.kept.get(key)
        if kept is None:
            compiled = self.kernel[grid](*args, **kw)
            rest = self.names[len(args):]
            if all(name in kw for name in rest) and hasattr(compiled, "packed_metadata"):
                if len(self.kept) > 512:  # many shapes: start over rather than grow
                    self.kept.clear()
                run = compiled.run
                self.kept[key] = (_raw_launch(run) or run, compiled.function,
                                  compiled.packed_metadata, tuple(kw[name] for name in rest))
            return
        if lead and all(map(_is_cuda, tensors)):
            # leading tensors go as their addresses: the launcher then neither calls
            # data_ptr nor asks the driver about each pointer (~1 us apiece on an H100 host)
            args = ptrs + args[lead:]
        run, function, packed, constexprs = kept
        run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
            torch._C._cuda_getCurrentRawStream(device), function, packed, None, None, None,
            *args, *constexprs)


_data_ptr = torch.Tensor.data_ptr
_is_cuda = operator.attrgetter("is_cuda")
_dtype = operator.attrgetter("dtype")


def _getter(idx):
    """``args -> tuple(args[i] for i in idx)`` at C speed."""
    if not idx:
        return lambda args: ()
    get = operator.itemgetter(*idx)
    return get if len(idx) > 1 else (lambda args: (get(args),))


_wrapped: dict = {}


def fast(kernel) -> FastKernel:
    """The :class:`FastKernel` of a ``@triton.jit`` kernel (one per kernel, kept)."""
    wrapped = _wrapped.get(kernel)
    if wrapped is None:
        wrapped = _wrapped[kernel] = FastKernel(kernel)
    return wrapped
