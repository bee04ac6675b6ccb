"""Fused CPU fake-quantization kernels, compiled from ``blockquant.c`` on first use.

The eager torch path of a format walks the tensor four to ten times (MX, NVFP4 and the per-group
integers: a copy into row order, block maxima, scale, rounding, scale back, a copy back); on a CPU
each walk costs about what the matrix products of a small layer cost. The C kernels walk it once:
block by block (reading a channels-last activation through a tiled transpose), or one pass per row
of one scale for the symmetric and asymmetric integers and the scaled FP8/FP6/FP4 floats (per
tensor or per channel, memory in any order), plus the training MSE clipping search and a tensor's
|x| maximum. They compute the torch path's fp32 operations in the same order, so both paths agree
bit for bit (the tests check every format on edge values); the MSE search alone sums its errors
in double, where torch sums fp32.

The shared library is built with the system C compiler (``$CC``, else ``cc``) into
``$NASQ_CACHE_DIR/kernels`` (default ``~/.cache/nasq/kernels``), named by a hash of the source,
flags and CPU features, and loaded with ctypes: no torch headers, a compile of well under a
second. Where there is no compiler, the build fails, ``NASQ_NATIVE=0`` is set, or the tensor is not
a float32 CPU tensor (GPUs, autocast), or while exporting or compiling, the formats take their
torch path; so does a tensor holding a NaN or an infinity.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from nasq.files import cache_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nasq.formats.floatbits import FloatLayout

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("blockquant.c")
# IEEE arithmetic as written: no -ffast-math, no fused multiply-add. -march=native: the library's
# name hashes this CPU's feature flags, so a home directory shared by other CPUs builds its own.
FLAGS = ("-O3", "-march=native", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")
KIND_MX, KIND_NVFP4, KIND_GROUP = 0, 1, 2
MAX_BLOCK = 1024
_ENV = "NASQ_NATIVE"


def plain_ops() -> bool:
    """True while torch traces for ONNX or compiles (torch.compile): the quantizers then take their
    plain out-of-place form (what the exporter was checked on; the compiler fuses it anyway)
    instead of the in-place one that saves allocations in eager mode."""
    import torch

    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def enabled() -> bool:
    """``NASQ_NATIVE`` is not ``0`` (read on every call, so tests can switch the path)."""
    return os.environ.get(_ENV, "1") != "0"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; ``None`` where it cannot be built
    (logged once)."""
    try:
        return _load()
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("nasq: fused fake-quantization kernels unavailable (%s); using the torch path", e)
        return None


def _load() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler '{compiler}' on PATH")
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + " ".join((compiler, *FLAGS, _cpu_flags())).encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"blockquant-{tag}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # build beside the target and rename: concurrent builders (Ray workers) never load half a file
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], check=True,
                           capture_output=True, timeout=120)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    fn = lib.nasq_block_quant
    i64p, f32p = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_float)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, i64p, i64p, i64p, ctypes.c_int64, ctypes.c_int, f32p,
                   ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_float]
    fn.restype = ctypes.c_int
    vp, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.nasq_int_symmetric.argtypes = [vp, vp, i64, i64, vp, f32]
    lib.nasq_int_mse_search.argtypes = [vp, i64, i64, vp, vp, ctypes.c_int, f32, vp]
    lib.nasq_int_asymmetric.argtypes = [vp, vp, i64, i64, f32, f32, ctypes.c_int]
    for name in ("nasq_int_symmetric", "nasq_int_mse_search", "nasq_int_asymmetric"):
        getattr(lib, name).restype = ctypes.c_int
    lib.nasq_scaled_float.argtypes = [vp, vp, i64, i64, vp, ctypes.c_int, ctypes.c_int, f32]
    lib.nasq_unsigned_grid.argtypes = [vp, vp, i64, f32, f32]
    lib.nasq_int8_affine.argtypes = [vp, vp, i64, f32, f32, f32, vp]
    for name in ("nasq_scaled_float", "nasq_unsigned_grid", "nasq_int8_affine"):
        getattr(lib, name).restype = ctypes.c_int
    lib.nasq_range_backward.argtypes = [vp, vp, vp, i64, f32, f32, f32, vp]
    lib.nasq_range_backward.restype = ctypes.c_int
    lib.nasq_abs_max_bits.argtypes = [vp, i64]
    lib.nasq_abs_max_bits.restype = ctypes.c_uint32
    return lib


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), else the machine name: part of the library's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine()


def applies(x: torch.Tensor, block: int) -> bool:
    """Whether the kernel can take ``x``: a float32 CPU tensor of 1 to 4 dims, not empty, in
    eager mode (not while exporting or compiling), with the kernel enabled and built."""
    import torch

    return (enabled() and x.dtype == torch.float32 and x.device.type == "cpu" and 1 <= x.dim() <= 4
            and x.numel() > 0 and block <= MAX_BLOCK and not plain_ops() and library() is not None)


def block_quant(x: torch.Tensor, block: int, kind: int, params: tuple[float, ...],
                element: FloatLayout | None = None, scale: FloatLayout | None = None) -> torch.Tensor | None:
    """Quantize-dequantize ``x`` (see :func:`applies`) block by block along each row (dim 0 × the
    rest, in logical order); ``None`` where a block holds a NaN or an infinity (the caller's torch
    path then decides)."""
    import torch

    out = torch.empty_like(x)  # keeps a dense layout's strides: channels-last stays channels-last
    shape, xs = _as4(x.shape, x.stride())
    os_ = _as4(out.shape, out.stride())[1]
    arr4 = ctypes.c_int64 * 4
    p = (ctypes.c_float * max(len(params), 1))(*params)
    el = element or _NO_LAYOUT
    sl = scale or _NO_LAYOUT
    rc = library().nasq_block_quant(
        x.data_ptr(), out.data_ptr(), arr4(*shape), arr4(*xs), arr4(*os_), block, kind, p,
        el.emin, el.man_bits, el.max_value, sl.emin, sl.man_bits, sl.max_value)
    if rc == 3:  # pragma: no cover
        raise MemoryError(f"the block kernel could not allocate a row of {x[0].numel()} floats")
    if rc == 2:  # pragma: no cover - applies() keeps block within MAX_BLOCK
        raise ValueError(f"block of {block} elements exceeds the kernel's {MAX_BLOCK}")
    return out if rc == 0 else None


def _as4(shape: tuple[int, ...], stride: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A 1-4 dim shape and stride as (N, C, H, W): a 1-D tensor is one row, and missing trailing
    dims have size 1."""
    if len(shape) == 1:
        shape, stride = (1, *shape), (0, *stride)
    return (tuple(shape) + (1, 1, 1))[:4], (tuple(stride) + (1, 1, 1))[:4]


class _NoLayout:
    emin, man_bits, max_value = 0, 0, 0.0


_NO_LAYOUT = _NoLayout()


def applies_rows(x: torch.Tensor, rows: int) -> bool:
    """Whether the row kernels (one scale per row) can take ``x`` cut into ``rows`` rows (1: per
    tensor; ``x.shape[0]``: per channel): as :func:`applies`, and dense, contiguous or channels-last,
    so that each row is a run of memory (the order inside a row does not matter to them)."""
    import torch

    dense = x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    return (dense and (rows == 1 or (x.dim() >= 1 and rows == x.shape[0])) and applies(x, 1))


def per_row(x: torch.Tensor, s: torch.Tensor) -> bool:
    """``s`` holds one scale for all of ``x`` or one per dim-0 row, shaped to broadcast so."""
    return s.numel() == 1 or (s.dim() == x.dim() and s.shape[0] == x.shape[0] and s.numel() == x.shape[0])


def scaled_float(x: torch.Tensor, scales: torch.Tensor, layout: FloatLayout) -> torch.Tensor | None:
    """``ScaledFloat._quantize``: ``round_float(x / s, layout) * s`` in one pass, ``scales`` one
    per row (see :func:`applies_rows`); ``None`` where ``x`` holds a NaN or an infinity."""
    import torch

    s = scales.detach().to(torch.float32).reshape(-1).contiguous()
    out = torch.empty_like(x)
    rc = library().nasq_scaled_float(x.data_ptr(), out.data_ptr(), s.numel(), x.numel() // s.numel(), s.data_ptr(),
                                     layout.emin, layout.man_bits, layout.max_value)
    return out if rc == 0 else None


def int_symmetric(x: torch.Tensor, scales: torch.Tensor, qmax: int) -> torch.Tensor | None:
    """``SymmetricInt._fake_quantize(x, s)`` in one pass, ``scales`` one fp32 per row (see
    :func:`applies_rows`); ``None`` where ``x`` holds a NaN or an infinity."""
    import torch

    s = scales.detach().to(torch.float32).reshape(-1).contiguous()
    out = torch.empty_like(x)
    rc = library().nasq_int_symmetric(x.data_ptr(), out.data_ptr(), s.numel(), x.numel() // s.numel(),
                                      s.data_ptr(), float(qmax))
    return out if rc == 0 else None


def int_symmetric_step(x: torch.Tensor, step: float, qmax: int) -> torch.Tensor | None:
    """:func:`int_symmetric` with one step for all of ``x``, given as a float (no scale tensor)."""
    import torch

    out = torch.empty_like(x)
    s = ctypes.c_float(step)
    rc = library().nasq_int_symmetric(x.data_ptr(), out.data_ptr(), 1, x.numel(), ctypes.addressof(s), float(qmax))
    return out if rc == 0 else None


def int_mse_search(rows: torch.Tensor, amax: torch.Tensor, ratios: torch.Tensor, qmax: int) -> torch.Tensor | None:
    """Index of the clipping ratio with the least squared error for each row of ``rows`` (a
    contiguous fp32 (rows, n) sample), as ``SymmetricInt._mse_amax`` searches it; the errors are
    summed in double (the torch path sums fp32), so in a near tie the two may pick neighbours."""
    import torch

    a = amax.detach().to(torch.float32).reshape(-1).contiguous()
    r = ratios.to(torch.float32).contiguous()
    best = torch.empty(rows.shape[0], dtype=torch.int64)
    rc = library().nasq_int_mse_search(rows.data_ptr(), rows.shape[0], rows.shape[1], a.data_ptr(), r.data_ptr(),
                                       r.numel(), float(qmax), best.data_ptr())
    return best if rc == 0 else None


def int_asymmetric(x: torch.Tensor, rows: int, qmax: int, min_amax: float, sig_bits: int) -> torch.Tensor | None:
    """``AsymmetricInt._quantize`` in two passes per row (range, then codes); ``None`` where ``x``
    holds a NaN or an infinity."""
    import torch

    out = torch.empty_like(x)
    rc = library().nasq_int_asymmetric(x.data_ptr(), out.data_ptr(), rows, x.numel() // rows, float(qmax),
                                       min_amax, sig_bits)
    return out if rc == 0 else None


_NAN_BITS = 0x7F800000  # above: a NaN


def abs_max(x: torch.Tensor) -> torch.Tensor | None:
    """``x.abs().amax()`` in one pass with no temporary, for a dense ``x`` (see
    :func:`applies_rows`); ``None`` where ``x`` holds a NaN (torch's answer then stands)."""
    import torch

    b = library().nasq_abs_max_bits(x.data_ptr(), x.numel())
    if b > _NAN_BITS:
        return None
    return torch.tensor(b, dtype=torch.int32).view(torch.float32)


def unsigned_grid(x: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor | None:
    """``clamp(round(x / s), 0, n) * s`` in one pass (a post-ReLU6 activation on the unsigned
    grid, ``nasq.supernet.layers.unsigned_activation_quant``), ``x`` dense (see
    :func:`applies_rows`); ``None`` where ``x`` holds a NaN or an infinity."""
    import torch

    out = torch.empty_like(x)
    rc = library().nasq_unsigned_grid(x.data_ptr(), out.data_ptr(), x.numel(), float(scale), float(n))
    return out if rc == 0 else None


def int8_affine(x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int,
                want_mask: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """torch's ``fake_quantize_per_tensor_affine`` (codes ``lo..hi`` around the zero point) in one
    pass, ``x`` dense: the values, and where ``want_mask`` and some code fell outside, the
    gradient's mask (else ``None``: every code inside). ``None`` where ``x`` is not finite."""
    import torch

    out = torch.empty_like(x)
    mask = torch.empty_like(x, dtype=torch.uint8) if want_mask else None  # x's memory order
    rc = library().nasq_int8_affine(x.data_ptr(), out.data_ptr(), x.numel(), float(scale), float(lo), float(hi),
                                    mask.data_ptr() if mask is not None else None)
    if rc == 1:
        return None
    return out, (mask.view(torch.bool) if rc == 2 and mask is not None else None)


def range_backward(x: torch.Tensor, grad: torch.Tensor, scale: float, lo: int,
                   hi: int) -> tuple[torch.Tensor, float] | None:
    """The backward of a learned activation range (``nasq.supernet.layers._LearnedRange``) in one
    pass: ``x``'s gradient (``grad`` inside the grid, 0 outside) and the sum of ``grad`` times
    (``round(v) - v`` inside, the clamped code outside), ``v = x / scale``. ``None`` unless ``x``
    and ``grad`` are dense in one memory order (see :func:`applies_rows`) and finite."""
    import torch

    if not (applies_rows(x, 1) and applies_rows(grad, 1) and grad.dtype == x.dtype and grad.stride() == x.stride()):
        return None
    out = torch.empty_like(x)
    total = ctypes.c_double()
    rc = library().nasq_range_backward(x.data_ptr(), grad.data_ptr(), out.data_ptr(), x.numel(), float(scale),
                                       float(lo), float(hi), ctypes.byref(total))
    return (out, total.value) if rc == 0 else None
