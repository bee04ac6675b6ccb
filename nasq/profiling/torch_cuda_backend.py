"""Per-layer latency on an NVIDIA GPU with torch kernels, timed with CUDA events.

Which kernel a (w_format, a_format) layer runs is decided by :func:`plan_kernel`, pure logic that
needs no GPU (and is unit-tested without one):

* float formats (fp32, bf16, fp16) run as bf16 ``F.conv2d`` / ``F.linear`` (tensor cores);
* int8 on both sides runs 1x1 convs and linears as ``torch._int_mm`` matmuls (activations are
  quantized first, the int32 result dequantized); int4/int2 run on the same int8 kernels (torch has
  no int4 matmul; the values fit in int8), and the row says so in ``reason``;
* fp8 on both sides runs 1x1 convs and linears as ``torch._scaled_mm`` (compute capability >= 8.9);
* depthwise convs always run in bf16: torch has no int8 or fp8 depthwise kernel;
* mixed families (e.g. int8 weights, fp8 activations) run in bf16 with the operands dequantized;
* an int8/fp8 dense conv with a kernel above 1x1 is ``unsupported``: torch has no such kernel, and
  nothing is invented for it.

Matmul shapes are padded to what the kernels accept (``_int_mm``: m > 16, k and n multiples of 8;
``_scaled_mm``: multiples of 16); the padding is real work and is recorded in ``runtime_ops``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nasq.errors import NasqError
from nasq.formats import get_format
from nasq.hardware.keys import LayerKey
from nasq.hardware.table import Row
from nasq.profiling.backend import LatencyBackend, Prepared, emulated_rest

FP8_MIN_CAPABILITY = (8, 9)


def kernel_family(fmt: str) -> str:
    """bf16 | int8 | fp8: the GPU kernel family a format's values run on."""
    f = get_format(fmt)
    if f.kind == "int":
        return "int8"
    if f.kind == "float" and f.bits == 8:
        return "fp8"
    return "bf16"


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


@dataclass(frozen=True)
class KernelPlan:
    kernel: str  # bf16_conv | bf16_linear | int8_int_mm | fp8_scaled_mm | none
    m: int = 0  # matmul rows (output pixels), padded
    k: int = 0  # reduction (input channels), padded
    n: int = 0  # output channels, padded
    padded: bool = False
    reason: str = ""  # a note for supported plans, the cause for unsupported ones

    @property
    def supported(self) -> bool:
        return self.kernel != "none"

    def label(self) -> str:
        dims = f" {self.m}x{self.k}x{self.n}{' padded' if self.padded else ''}" if self.m else ""
        return self.kernel + dims


def plan_kernel(key: LayerKey) -> KernelPlan:
    w, a = kernel_family(key.w_format), kernel_family(key.a_format)
    family = w if w == a else "bf16"
    note = "int4/int2 values run on int8 kernels (torch has no int4 matmul)" if family == "int8" and (
        get_format(key.w_format).bits < 8 or get_format(key.a_format).bits < 8) else ""
    if key.op == "dwconv":
        why = "no int8/fp8 depthwise kernel in torch" if family != "bf16" else ""
        return KernelPlan("bf16_conv", reason=why)
    if family == "bf16":
        mixed = f"mixed {w}/{a} operands run in bf16" if w != a else ""
        return KernelPlan("bf16_linear" if key.op == "linear" else "bf16_conv", reason=mixed)
    if key.op == "conv" and key.kernel != 1:
        return KernelPlan("none", reason=f"torch has no {family} {key.kernel}x{key.kernel} convolution kernel")
    m, k, n = key.hout * key.hout, key.cin, key.cout
    if family == "int8":
        pm, pk, pn = max(_round_up(m, 8), 24), _round_up(k, 8), _round_up(n, 8)
        kernel = "int8_int_mm"
    else:
        pm, pk, pn = _round_up(m, 16), _round_up(k, 16), _round_up(n, 16)
        kernel = "fp8_scaled_mm"
    return KernelPlan(kernel, pm, pk, pn, (pm, pk, pn) != (m, k, n), note)


# Formats with a torch storage dtype and a GPU kernel (bf16/fp16 tensor cores, _int_mm, _scaled_mm).
GPU_NATIVE = frozenset({"fp32", "bf16", "fp16", "int8", "fp8_e4m3", "fp8_e5m2"})


class TorchCudaBackend(LatencyBackend):
    """Times layers as torch kernels, not an exported model: nothing here can run an ONNX file,
    so :meth:`load_model` refuses (whole_models is False) and whole-subnet fits need
    ``--fit-subnets 0``."""

    name = "torch-cuda"
    native_formats = GPU_NATIVE
    emulated_formats = emulated_rest(GPU_NATIVE)
    whole_models = False

    def check_available(self) -> None:
        if not torch.cuda.is_available():
            raise NasqError("CUDA is not available (torch.cuda.is_available() is False): the torch-cuda "
                            "backend measures on an NVIDIA GPU; on this machine use --backend onnxruntime")

    def _prepare(self, key: LayerKey) -> Prepared | Row:
        plan = plan_kernel(key)
        if not plan.supported:
            return Row.unsupported(plan.reason)
        if plan.kernel == "fp8_scaled_mm" and torch.cuda.get_device_capability() < FP8_MIN_CAPABILITY:
            cap = ".".join(map(str, torch.cuda.get_device_capability()))
            return Row.unsupported(f"torch._scaled_mm (fp8) needs compute capability >= 8.9, got {cap}")
        gen = torch.Generator(device="cuda").manual_seed(self.seed)
        fn = _build_callable(key, plan, gen)
        try:
            fn()
            torch.cuda.synchronize()
        except RuntimeError as e:  # a kernel that rejects these shapes or this device
            return Row.unsupported(f"{plan.kernel} failed: {str(e).strip().splitlines()[0][:200]}")
        return Prepared(fn, plan.label(), plan.reason)

    def _time_us(self, handle: Any, warmup: int, repeats: int) -> np.ndarray:
        return _time_cuda_us(handle, warmup, repeats)

    def load_model(self, onnx_path: str | os.PathLike) -> Any:
        raise NasqError(f"{onnx_path}: the torch-cuda backend times single layers as torch kernels and cannot "
                        "run an exported ONNX model; check or time whole models with --backend onnxruntime or openvino")

    def run_model(self, handle: Any, x: np.ndarray) -> np.ndarray:
        raise NasqError("the torch-cuda backend cannot run an exported ONNX model (see load_model)")

    def time_model_ms(self, handle: Any, x: np.ndarray, warmup: int, repeats: int) -> np.ndarray:
        raise NasqError("the torch-cuda backend cannot time an exported ONNX model (see load_model)")

    def int8_weight_storage(self) -> str | None:
        return None  # torch kernels, nothing lowered to ONNX

    def describe(self) -> dict[str, Any]:
        self.check_available()
        versions = {"torch": torch.__version__, "cuda": str(torch.version.cuda), "python": platform.python_version()}
        return {"device": f"{torch.cuda.get_device_name()} (torch eager, CUDA events)", "versions": versions,
                "session_overhead_us": None}


def _time_cuda_us(fn: Any, warmup: int, repeats: int) -> np.ndarray:
    """Per-call GPU time between two CUDA events (launch included), microseconds."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return np.array([s.elapsed_time(e) * 1e3 for s, e in pairs])


def _build_callable(key: LayerKey, plan: KernelPlan, gen: Any) -> Any:
    """A zero-argument function running the layer once (conv/matmul, folded bias, activation)."""
    dev, bf16 = "cuda", torch.bfloat16
    act = (lambda y: y.clamp_(0, 6)) if key.act == "relu6" else (lambda y: y)
    bias = torch.randn(key.cout, device=dev, generator=gen).to(bf16)
    if plan.kernel == "bf16_linear":
        x = torch.randn(1, key.cin, device=dev, generator=gen, dtype=bf16)
        w = torch.randn(key.cout, key.cin, device=dev, generator=gen, dtype=bf16)
        return lambda: act(F.linear(x, w, bias))
    if plan.kernel == "bf16_conv":
        groups = key.cin if key.op == "dwconv" else 1
        x = torch.randn(1, key.cin, key.hin, key.hin, device=dev, generator=gen, dtype=bf16)
        w = torch.randn(key.cout, key.cin // groups, key.kernel, key.kernel, device=dev, generator=gen, dtype=bf16)
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
        return lambda: act(F.conv2d(x, w, bias, key.stride, key.kernel // 2, 1, groups))
    x = torch.randn(plan.m, plan.k, device=dev, generator=gen)
    w = torch.randn(plan.n, plan.k, device=dev, generator=gen)
    bias_n = torch.randn(plan.n, device=dev, generator=gen)
    if plan.kernel == "int8_int_mm":
        w_q = w.mul(20).round().clamp(-127, 127).to(torch.int8).t()  # (k, n) column-major view
        scale = torch.full((plan.n,), 0.05, device=dev)

        def int8() -> Any:
            x_q = x.mul(20).round().clamp(-127, 127).to(torch.int8)
            return act(torch._int_mm(x_q, w_q).float() * scale + bias_n)

        return int8
    w_f8 = w.to(torch.float8_e4m3fn).t()  # (k, n) column-major, as _scaled_mm requires
    one = torch.ones((), device=dev)

    def fp8() -> Any:
        x_f8 = x.to(torch.float8_e4m3fn)
        y = torch._scaled_mm(x_f8, w_f8, scale_a=one, scale_b=one, out_dtype=bf16)
        return act(y + bias_n.to(bf16))

    return fp8
