"""The direct kernel launcher: its key is at least as fine as triton's specialization, and on
the GPU a direct launch computes what triton's own launch computes."""

import pytest
import torch

triton = pytest.importorskip("triton")
from triton._C.libtriton import native_specialize_impl  # noqa: E402
from triton.backends.compiler import BaseBackend  # noqa: E402

from lighthouse_attn.ops.triton import launch  # noqa: E402


def triton_spec(arg):
    return native_specialize_impl(BaseBackend, arg, False, True, True)


def test_key_separates_whatever_triton_specializes():
    base = torch.empty(64, dtype=torch.bfloat16)
    args = [0, 1, 2, 15, 16, 17, 32, -16, -3, 2**31 - 16, 2**31, 2**40 + 1, 2**63, 1.5, True,
            False, base, base[1:], base[8:], base.float(), base.half()[3:]]
    for a in args:
        for b in args:
            if type(a) is type(b) and launch.spec_key(a) == launch.spec_key(b):
                assert triton_spec(a) == triton_spec(b), (a, b)


def test_key_rejects_unknown_arguments():
    with pytest.raises(TypeError, match="no launch key"):
        launch.spec_key("a string")


def test_one_wrapper_per_kernel():
    from lighthouse_attn.ops.triton.gather_scatter import _pool_kernel

    assert launch.fast(_pool_kernel) is launch.fast(_pool_kernel)


@pytest.mark.gpu
def test_direct_launch_matches_triton_launch():
    import triton.language as tl

    @triton.jit
    def add_scaled(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        x = tl.load(x_ptr + i, mask=m)
        y = tl.load(y_ptr + i, mask=m)
        tl.store(out_ptr + i, x * scale + y, mask=m)

    assert launch.DIRECT, "the direct launcher should apply to this triton version"
    fk = launch.fast(add_scaled)
    g = torch.Generator(device="cuda").manual_seed(0)
    for n, off in ((1000, 0), (1024, 0), (1000, 1), (1, 0), (4096, 3), (1000, 0)):
        x = torch.randn(n + off, device="cuda", generator=g)[off:]
        y = torch.randn(n, device="cuda", generator=g)
        out = torch.empty_like(y)
        fk[(triton.cdiv(n, 256),)](x, y, out, n, 0.5, BLOCK=256)
        torch.testing.assert_close(out, x * 0.5 + y, rtol=0, atol=1e-6)
    assert len(fk.kept) >= 3  # aligned/unaligned, n divisible by 16 or not, n == 1


def test_layout_passes_addresses_only_for_leading_tensors():
    """Leading tensor arguments may go to the launcher as addresses; a tensor after a
    non-tensor keeps every argument as it is."""
    from lighthouse_attn.ops.triton.gather_scatter import _map_kernel

    fk = launch.FastKernel(_map_kernel)
    t = torch.zeros(4)
    *_, descs, lead = fk._layout((t, t, 3, 1.5))
    assert (descs, lead) == (False, 2)
    assert fk._layout((t, 3, t))[-1] == 0
    assert fk._layout((3, 4))[-1] == 0


def test_host_arithmetic_helpers():
    assert [launch.cdiv(a, 16) for a in (1, 16, 17, 32)] == [1, 1, 2, 2]
    assert [launch.next_pow2(n) for n in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]


def test_raw_launch_only_where_the_wrapper_adds_nothing():
    class Launcher:
        global_scratch_size = 0
        profile_scratch_size = 128  # a wrapper that must allocate: keep it

        def launch(self, *args):
            pass

        def __call__(self, gridX, gridY, gridZ, stream, function, *args):
            pass

    assert launch._raw_launch(Launcher()) is None
    Launcher.profile_scratch_size = 0
    assert launch._raw_launch(Launcher()) is None  # its __call__ is not triton's: keep it
