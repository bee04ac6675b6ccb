"""Elastic convolution, batch norm and activation quantizers, plus their static counterparts."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasq.formats import (
    MIN_AMAX,
    NumericFormat,
    Passthrough,
    ScaledFloat,
    SymmetricInt,
    get_format,
    native,
)
from nasq.formats.base import abs_max, plain_ops, straight_through


def per_channel_amax(w: torch.Tensor) -> torch.Tensor:
    return w.detach().abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)


RELU6_MAX = 6.0  # the top of a ReLU6 output: an unsigned int8 grid never reaches beyond it


def _unsigned_max_scale() -> float:
    """The largest float32 step whose 255th multiple (float32) is at most 6: a ReLU6 after the
    dequantized value is then exact, and onnxruntime's ClipQuantFusion sees a QuantizeLinear
    saturating inside the ReLU6's Clip (it drops the Clip and fuses the integer kernel)."""
    s = torch.tensor(RELU6_MAX / 255.0, dtype=torch.float32)
    while float(s * 255.0) > RELU6_MAX:
        s = torch.nextafter(s, torch.zeros_like(s))
    return float(s)


UNSIGNED_MAX_SCALE = _unsigned_max_scale()


def int8_activation(fmt: NumericFormat) -> bool:
    """Activations in this format are one int8 QuantizeLinear/DequantizeLinear pair per tensor
    (:func:`int8_activation_quant`), not the format's own narrow-range fake quantizer."""
    return isinstance(fmt, SymmetricInt) and fmt.export_mode == "qdq_int8"


def int8_activation_scale(amax: torch.Tensor, unsigned: bool) -> torch.Tensor:
    """The step of an int8 activation: ``min(amax, 6) / 255`` for an unsigned (post-ReLU6) tensor,
    whose QuantizeLinear then saturates at or below 6 (onnxruntime drops the ReLU6 Clip before
    it), else nasq's symmetric ``amax / 127``."""
    if not unsigned:
        return (amax.detach().clamp_min(1e-12) / 127.0).float().reshape(())
    return (amax.detach().clamp_min(1e-12) / 255.0).float().clamp_max(UNSIGNED_MAX_SCALE).reshape(())


def int8_activation_quant(x: torch.Tensor, amax: torch.Tensor | None, unsigned: bool) -> torch.Tensor:
    """An int8 activation, stored uint8 as onnxruntime runs fastest: unsigned codes 0..255 (zero
    point 0) for a post-ReLU6 tensor, else the symmetric grid shifted by 128 (zero point 128,
    codes -128..127 around it: the full range QuantizeLinear holds, so no Clip precedes it). The
    same op in training, evaluation and export (exported as one QuantizeLinear/DequantizeLinear)."""
    if amax is None:
        amax = abs_max(x.detach())
    scale = int8_activation_scale(amax, unsigned)
    if x.dtype == torch.float32 and not torch.onnx.is_in_onnx_export():
        lo = 0 if unsigned else -128  # the codes minus the zero point
        return _Int8FakeQuant.apply(x, scale, lo, lo + 255)
    zero = torch.full((), 0 if unsigned else 128, dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def unsigned_grid(fmt: NumericFormat) -> bool:
    """Activations in this format take :func:`unsigned_activation_quant` where the input is a ReLU6
    output: a symmetric integer narrower than int8 with a max-derived scale. A post-ReLU6 tensor has
    no negative values, and the signed grid would spend half its codes on them (int4: 8 levels
    used of 15, against 16 on the unsigned grid); int8 has its own unsigned path."""
    return (isinstance(fmt, SymmetricInt) and not int8_activation(fmt) and fmt.scale_method == "max"
            and not fmt.learns_scale)


def unsigned_activation_quant(x: torch.Tensor, amax: torch.Tensor | None, bits: int) -> torch.Tensor:
    """A post-ReLU6 activation on the unsigned grid: codes ``0..2**bits - 1`` (zero point 0), step
    ``min(amax, 6) / (2**bits - 1)``; ``amax`` None means the tensor's own max. Gradients pass
    straight through; exported as Div, Round, Clip and Mul."""
    n = 2 ** bits - 1
    if amax is None:
        amax = x.detach().amax()
    s = (amax.detach().float().clamp(MIN_AMAX, RELU6_MAX) / n).reshape(())
    if plain_ops():
        return (x / s).round().clamp(0, n) * s
    q = native.unsigned_grid(x.detach(), s, n) if native.applies_rows(x, 1) else None  # one fused pass
    if q is None:
        q = (x.detach() / s).round_().clamp_(0, n).mul_(s)  # one allocation: the rest in place
    return straight_through(x, q) if x.requires_grad else q


def activation_quant(fmt: NumericFormat, x: torch.Tensor, amax: torch.Tensor | None, unsigned: bool) -> torch.Tensor:
    """An activation in ``fmt`` as training, evaluation and export compute it: int8 as one
    QuantizeLinear/DequantizeLinear pair, a narrower integer after a ReLU6 (``unsigned``) on the
    unsigned grid, else the format's own fake quantizer. ``amax`` None: the tensor's own max."""
    if int8_activation(fmt):
        return int8_activation_quant(x, amax, unsigned)
    if unsigned and unsigned_grid(fmt):
        return unsigned_activation_quant(x, amax, fmt.bits)
    return fmt.fake_quant(x, amax)


LEARNED_SLOTS = 8  # learned ranges per activation quantizer: [signed, unsigned] x bits 0..7


def learns_range(fmt: NumericFormat) -> bool:
    """Activations in this format learn their clipping range in training (:class:`ActQuant`): the
    symmetric integers narrower than int8 with a max-derived scale (the same formats that take the
    unsigned grid after a ReLU6). A scale from each batch's maximum spends int4's few levels on
    rare large values (docs/benchmarks.md, "learned-ranges", measures what learning wins back)."""
    return unsigned_grid(fmt)


def _range_levels(fmt: NumericFormat, unsigned: bool) -> tuple[int, int]:
    """The lowest and highest code of ``fmt``'s activation grid (unsigned: 0..2**bits - 1)."""
    if unsigned:
        return 0, 2 ** fmt.bits - 1
    return -fmt.qmax, fmt.qmax


def _range_step(r: torch.Tensor, fmt: NumericFormat, unsigned: bool) -> torch.Tensor:
    """The step of a learned range ``r`` as :func:`activation_quant` computes it from an ``amax``."""
    hi = _range_levels(fmt, unsigned)[1]
    return (r.clamp(MIN_AMAX, RELU6_MAX) if unsigned else r.clamp_min(MIN_AMAX)) / hi


class _LearnedRange(torch.autograd.Function):
    """``activation_quant(fmt, x, r, unsigned)``, values bit for bit (the fused kernels where they
    apply), with the gradients of learned step size quantization (LSQ, Esser et al. 2020): ``x``
    gets the incoming gradient where its code lies inside the grid, zero outside; the range ``r``
    gets ``round(v) - v`` inside and the clamped code outside (``v = x / step``), scaled by
    ``1 / sqrt(elements * highest code)`` and by the step's derivative in ``r`` (``1 / highest
    code`` where ``r`` lies within the step's clamp, bounds included, as torch's clamp passes it).

    On a CPU, where the fused kernels apply, the step and the range's gradient are computed on
    numpy float32 scalars (which round as the tensor ops do), with none of the tensor
    ops' per-call overhead: tens of microseconds a call, on tensors that take a few to quantize."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, r: torch.Tensor, fmt: NumericFormat, unsigned: bool) -> torch.Tensor:
        lo, hi = _range_levels(fmt, unsigned)
        ctx.unsigned, ctx.levels, ctx.fused = unsigned, (lo, hi), None
        ctx.save_for_backward(x, r)  # r too: the backward falls back to tensor ops (another memory order)
        if native.applies_rows(x, 1):  # float32 on CPU: one fused pass, as activation_quant's
            step = _range_step_value(float(r), hi, unsigned)
            q = native.unsigned_grid(x.detach(), step[0], hi) if unsigned else native.int_symmetric_step(x.detach(), step[0], hi)
            if q is not None:
                ctx.fused = step
                return q
        ctx.step = _range_step(r.detach(), fmt, unsigned).float()
        return activation_quant(fmt, x.detach(), r.detach(), unsigned)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lo, hi = ctx.levels
        x, r = ctx.saved_tensors
        norm = (x.numel() * hi) ** 0.5
        if ctx.fused is not None:  # one pass on CPU
            step, within = ctx.fused
            fused = native.range_backward(x, grad, float(step), lo, hi)
            if fused is not None:
                grad_x, total = fused
                g_r = np.float32(total / norm) / np.float32(hi) if within else np.float32(0.0)
                return grad_x, torch.tensor(g_r), None, None
            s = torch.tensor(step)  # a gradient in another memory order: the tensor ops below
        else:
            s = ctx.step
        rv = r.detach()
        within = (rv >= MIN_AMAX) & (rv <= RELU6_MAX) if ctx.unsigned else rv >= MIN_AMAX
        v = x / s
        inside = (v >= lo) & (v <= hi)
        codes = v.clamp(lo, hi).round_()
        term = codes.sub_(v.mul_(inside))  # round(v) - v inside, the clamped code outside
        g_s = (grad * term).sum() / norm
        return grad * inside, (g_s / hi * within).to(rv.dtype).reshape(rv.shape), None, None


def _range_step_value(r: float, hi: int, unsigned: bool) -> tuple[np.float32, bool]:
    """:func:`_range_step` of a float32 range ``r`` as a float32 scalar (numpy's float32 ops round
    as torch's do), and whether ``r`` lies within the step's clamp (bounds included)."""
    v, floor, top = np.float32(r), np.float32(MIN_AMAX), np.float32(RELU6_MAX)
    within = bool(v >= floor) and (not unsigned or bool(v <= top))
    clamped = max(v, floor)
    if unsigned:
        clamped = min(clamped, top)
    return clamped / np.float32(hi), within


def learned_range_quant(x: torch.Tensor, r: torch.Tensor, fmt: NumericFormat, unsigned: bool) -> torch.Tensor:
    """``x`` on ``fmt``'s activation grid with the learned range ``r`` (LSQ gradients to both);
    the plain differentiable expression while exporting or compiling."""
    if not plain_ops():
        return _LearnedRange.apply(x, r, fmt, unsigned)
    lo, hi = _range_levels(fmt, unsigned)
    s = _range_step(r, fmt, unsigned)
    g = 1.0 / (x.numel() * hi) ** 0.5
    s = (s * g - (s * g).detach()) + s.detach()  # value s, gradient g * ds
    v = (x / s).clamp(lo, hi)
    return (v + (v.round() - v).detach()) * s


class _Int8FakeQuant(torch.autograd.Function):
    """torch's ``fake_quantize_per_tensor_affine`` (codes 0..255 around a zero point), values and
    gradient bit for bit, in three in-place passes: on a CPU the fused kernel took longer than the
    layer it follows. ``round(x / s)`` is clamped to ``[lo, hi]`` (the codes minus the zero point),
    ``+ 0.0`` gives the kernel's +0 for a rounded -0; the gradient passes where the unclamped code
    lies within the range, as the kernel's mask says.

    On a CPU the codes' smallest and largest are looked at first: in training, where the scale
    comes from the tensor's own maximum, every code lies inside, and then the clamp and the mask
    (three passes over boolean tensors, several times the cost of a float pass) are skipped and
    the gradient passes as it is; the values and gradients are the same."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        fused = native.int8_affine(x, scale, lo, hi, ctx.needs_input_grad[0]) if native.applies_rows(x, 1) else None
        if fused is not None:  # one pass on CPU: the same values, and the mask only if a code fell outside
            out, inside = fused
            ctx.all_inside = inside is None
            if inside is not None:
                ctx.save_for_backward(inside)
            return out
        r = torch.mul(x, scale.reciprocal()).round_().add_(0.0)
        ctx.all_inside = x.device.type == "cpu" and float(r.amin()) >= lo and float(r.amax()) <= hi
        if ctx.all_inside:
            return r.mul_(scale)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward((r >= lo) & (r <= hi))
        return r.clamp_(lo, hi).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.all_inside:
            return grad, None, None, None
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


class ActQuant(nn.Module):
    """Per-tensor activation quantizer.

    While training it scales by each batch's own absolute max. ``calibrating`` records the max over
    calibration batches; afterwards (eval mode) that recorded max is used, which is what an
    exported model with static scales computes. int8 uses :func:`int8_activation_quant`;
    ``unsigned`` (set by the block for a post-ReLU6 input) selects its unsigned grid.

    Formats that :func:`learns_range` (int2-int7) instead learn their range in training, one per
    grid (signed, unsigned) and width in bits (``learned_amax``, LSQ gradients). A range starts
    where LSQ starts its step, ``2 mean|x| / sqrt(levels)`` of the first batch that uses it
    (averaged over the ranks of a distributed run); from then on training, evaluation and
    calibration (which records it as ``amax``, the static range an export writes) all use it. A
    range never trained (``learned_set`` false: a fresh supernet, or a checkpoint from before
    ranges were learned) falls back to the maximum as above.
    """

    LEARNS = True  # OutQuant (int8 only) has no learned ranges

    def __init__(self) -> None:
        super().__init__()
        self.fmt: NumericFormat = get_format("fp32")
        self.register_buffer("amax", torch.zeros(()))
        self.calibrating = False
        self.unsigned = False
        if self.LEARNS:
            self.learned_amax = nn.Parameter(torch.zeros(2, LEARNED_SLOTS))
            self.register_buffer("learned_set", torch.zeros(2, LEARNED_SLOTS, dtype=torch.bool))
        self._set_slots: set[tuple[int, int]] | None = None  # learned_set, read once (no sync per call)
        self.starts_ranges = True  # False: training starts no range (``activation_ranges: max``)

    @property
    def int8(self) -> bool:
        return int8_activation(self.fmt)

    def set_format(self, name: str) -> None:
        self.fmt = get_format(name)
        self.amax.zero_()

    @property
    def active(self) -> bool:
        return not self.fmt.is_identity

    def _slot(self) -> tuple[int, int] | None:
        """Where the active format's learned range lives, or None (the format learns none)."""
        if not self.LEARNS or not learns_range(self.fmt):
            return None
        return int(self.unsigned), self.fmt.bits

    def _learned(self, slot: tuple[int, int], x: torch.Tensor) -> bool:
        """Whether ``slot`` holds a range; in training, one is started from ``x`` if not."""
        if self._set_slots is None:
            self._set_slots = {tuple(ix) for ix in self.learned_set.nonzero().tolist()}
        if slot in self._set_slots:
            return True
        if not (self.starts_ranges and self.training and not self.calibrating and torch.is_grad_enabled()):
            return False
        hi = _range_levels(self.fmt, bool(slot[0]))[1]
        with torch.no_grad():
            # sum |x| and count over every rank (a rank's shard may be empty): all start alike
            stats = torch.stack([x.detach().abs().sum().float(), torch.tensor(float(x.numel()), device=x.device)])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(stats)
            if float(stats[1]) == 0:
                return False
            r = 2.0 * stats[0] / stats[1] * hi ** 0.5
            self.learned_amax[slot] = r.clamp(MIN_AMAX, RELU6_MAX) if slot[0] else r.clamp_min(MIN_AMAX)
            self.learned_set[slot] = True
        self._set_slots.add(slot)
        return True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint from before ranges were learned: none set, the maximum as then
        if self.LEARNS:
            for name in ("learned_amax", "learned_set"):
                state_dict.setdefault(prefix + name, getattr(self, name).detach().clone().zero_())
        self._set_slots = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def static_amax(self) -> torch.Tensor:
        """The range a static (extracted) layer uses: the calibrated one, else a learned one."""
        slot = self._slot()
        if float(self.amax) > 0 or slot is None or not bool(self.learned_set[slot]):
            return self.amax
        return self.learned_amax[slot].detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        slot = self._slot()
        if slot is not None and self._learned(slot, x):
            r = self.learned_amax[slot]
            if self.calibrating:
                self.amax.copy_(r.detach())
            if self.training and not self.calibrating and torch.is_grad_enabled():
                return learned_range_quant(x, r, self.fmt, bool(slot[0]))
            return self._quantize(x, r.detach())
        if self.calibrating:
            self.amax.copy_(torch.maximum(self.amax, x.detach().abs().amax()))
        if self.training or self.calibrating or not bool(self.amax > 0):
            return self._quantize(x, None)
        return self._quantize(x, self.amax)

    def _quantize(self, x: torch.Tensor, amax: torch.Tensor | None) -> torch.Tensor:
        """Called by ``forward`` when active; ``amax`` None means the tensor's own max."""
        return activation_quant(self.fmt, x, amax, self.unsigned)


def integer_kernel(w_format: str, a_format: str) -> bool:
    """int8 weights on int8 inputs: the layer runs as an integer kernel, whose int32 accumulator
    is requantized to int8 at its output (what onnxruntime's QLinearConv does)."""
    w, a = get_format(w_format), get_format(a_format)
    return all(isinstance(f, SymmetricInt) and f.bits == 8 for f in (w, a))


def int32_bias_step(a_amax: torch.Tensor, w: torch.Tensor, unsigned: bool = False) -> torch.Tensor:
    """Per output channel, the scale of an integer kernel's int32 bias: input scale
    (:func:`int8_activation_scale`) × weight scale (int8 symmetric), as onnxruntime's QLinearConv
    adds it to the accumulator."""
    s_a = int8_activation_scale(a_amax, unsigned)
    s_w = (per_channel_amax(w).clamp_min(1e-12) / 127.0).flatten()
    return (s_a * s_w).float()


def integer_bias(b: torch.Tensor | None, a_amax: torch.Tensor, w: torch.Tensor,
                 unsigned: bool = False) -> torch.Tensor | None:
    """An integer kernel's bias: ``b`` on the int32 grid of :func:`int32_bias_step` (what its
    accumulator adds, and what onnxruntime's QLinearConv computes). Unchanged without a
    calibrated input range."""
    if b is None or float(a_amax) <= 0:
        return b
    step = int32_bias_step(a_amax, w, unsigned)
    return torch.round(b / step) * step


def foldable(w_format: str) -> bool:
    """Weight formats whose per-output-channel scale follows each channel's own max: folding a
    batch-norm scale into the weight before quantizing changes only float rounding. Group, block,
    cast and asymmetric formats (shared or snapped scales) keep their batch norm."""
    return isinstance(get_format(w_format), (Passthrough, ScaledFloat, SymmetricInt))


def folded_weight_bias(w: torch.Tensor, b: torch.Tensor | None,
                       norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` and ``b`` (None: zero) of a conv with the eval-mode ``norm`` (its first ``w.shape[0]``
    channels) folded in. One function for the supernet, the static subnet and the export, so all
    three compute the same float values."""
    c = w.shape[0]
    g = norm.running_var[:c].add(norm.eps).rsqrt()
    if norm.weight is not None:
        g = g * norm.weight[:c]
    shift = -norm.running_mean[:c] * g
    if norm.bias is not None:
        shift = shift + norm.bias[:c]
    if b is not None:
        shift = shift + b * g
    return w * g.reshape(-1, *([1] * (w.dim() - 1))), shift


class OutQuant(ActQuant):
    """Output requantizer of an integer-kernel conv; identity for other layers, and for an integer
    kernel whose output (after its ReLU6, if any) goes straight to an int8 input quantizer
    (``consumer_quantizes``, set by the block): that quantizer is then the requantizer, one
    QuantizeLinear/DequantizeLinear per tensor, after the ReLU6. ``relu6`` (set by the block when
    a ReLU6 follows the layer): the requantizer applies that ReLU6 first and uses the unsigned
    grid, never a quantizer between a conv and its ReLU6 (the block's own ReLU6 after it is then
    an exact no-op, which the lowering drops)."""

    LEARNS = False

    def __init__(self) -> None:
        super().__init__()
        self.enabled = False
        self.consumer_quantizes = False
        self.relu6 = False

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.active and self.relu6:
            y = F.relu6(y)
        return super().forward(y)

    def set_format(self, name: str) -> None:  # name: "int8" when the layer is an integer kernel
        self.enabled = name == "int8"
        self.amax.zero_()

    @property
    def active(self) -> bool:
        return self.enabled and not self.consumer_quantizes

    def _quantize(self, y: torch.Tensor, amax: torch.Tensor | None) -> torch.Tensor:
        return int8_activation_quant(y, amax, self.relu6)


class ElasticConv2d(nn.Module):
    """A conv whose output channels, input channels and kernel (centre crop) are chosen per call."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False):
        super().__init__()
        self.stride, self.depthwise, self.max_kernel = stride, depthwise, kernel
        shape = (cout, 1 if depthwise else cin, kernel, kernel)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, cin: int, cout: int, kernel: int) -> torch.Tensor:
        lo = (self.max_kernel - kernel) // 2
        w = self.weight[:cout, : (1 if self.depthwise else cin), lo : lo + kernel, lo : lo + kernel]
        return w.contiguous()

    def forward(self, x: torch.Tensor, cout: int, kernel: int, w_fmt: NumericFormat) -> torch.Tensor:
        w = self.active_weight(x.shape[1], cout, kernel)
        if not w_fmt.is_identity:
            w = w_fmt.fake_quant(w, per_channel_amax(w))
        groups = cout if self.depthwise else 1
        return F.conv2d(x, w, None, self.stride, kernel // 2, 1, groups)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the first ``C`` channels of its input. During recalibration the running
    statistics are a plain average over the calibration batches (``calib_step`` counts them)."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.calib_step: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        momentum = self.momentum if self.calib_step is None else 1.0 / (self.calib_step + 1)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c],
                            self.bias[:c], self.training, momentum, self.eps)


class StaticQConv(nn.Module):
    """A plain conv with fixed weight/activation formats and calibrated activation scale.

    ``prepare_export`` swaps the fake quantization for ops the ONNX exporter writes as standard
    operators: int8 as QuantizeLinear/DequantizeLinear pairs, other formats as pre-quantized
    weights and elementwise rounding of activations.
    """

    def __init__(self, conv: nn.Conv2d, w_format: str, a_format: str, a_amax: torch.Tensor,
                 o_amax: torch.Tensor | None = None, *, a_unsigned: bool = False,
                 requantize: bool | None = None, o_relu6: bool = False):
        super().__init__()
        self.conv = conv
        self.w_format, self.a_format = w_format, a_format
        self.register_buffer("a_amax", a_amax.detach().clone().reshape(()))
        # int8 input on the unsigned (post-ReLU6) grid; no own requantizer when the consumer's
        # int8 input quantizer is it (see OutQuant). Both follow the subnet, not the state dict.
        self.a_unsigned, self.o_relu6 = a_unsigned, o_relu6
        self.integer = integer_kernel(w_format, a_format)
        self.quantize_output = self.integer if requantize is None else requantize and self.integer
        o = torch.zeros(()) if o_amax is None else o_amax.detach().clone().reshape(())
        self.register_buffer("o_amax", o)
        self.exporting = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.requantize(self.compute(x))

    @property
    def int8_input(self) -> bool:
        """The input is one int8 QuantizeLinear/DequantizeLinear, shareable with a residual Add."""
        return int8_activation(get_format(self.a_format))

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input quantizer alone (a block's residual reads the int8 input it quantized)."""
        a_fmt = get_format(self.a_format)
        if a_fmt.is_identity:
            return x
        if self.exporting and not (self.int8_input or self.a_unsigned and unsigned_grid(a_fmt)):
            return a_fmt.export_activation(x, self.a_amax)
        amax = self.a_amax if self.exporting or float(self.a_amax) > 0 else None
        return activation_quant(a_fmt, x, amax, self.a_unsigned)

    def compute(self, x: torch.Tensor, norm: nn.BatchNorm2d | None = None) -> torch.Tensor:
        """Input quantizer and the layer's op on (fake-)quantized weights, before any requantizer;
        with ``norm`` (eval mode), that batch norm folded into the weight and bias first."""
        w_fmt = get_format(self.w_format)
        x = self.quantize_input(x)
        w, b = self.conv.weight, self.conv.bias
        if norm is not None:
            w, b = folded_weight_bias(w, b, norm)
        b = self._bias(w, b)
        if self.exporting and isinstance(w_fmt, SymmetricInt) and w_fmt.bits == 8:
            w = torch.fake_quantize_per_channel_affine(w, self.w_scale, self.w_zero, 0, -128, 127)
        elif not self.exporting and not w_fmt.is_identity:
            w = w_fmt.fake_quant(w, per_channel_amax(w))
        return self._op(x, w, b)

    def requantize(self, y: torch.Tensor) -> torch.Tensor:
        """The integer kernel's int8 output requantizer (identity for other layers); it comes after
        the batch norm, folded or not, as the int32 accumulator of a real kernel holds the folded
        bias (exported as QuantizeLinear right after the Conv: onnxruntime then fuses QLinearConv)."""
        if not self.quantize_output:
            return y
        if self.o_relu6:  # see OutQuant: the ReLU6 that follows the layer, then the unsigned grid
            y = F.relu6(y)
        amax = self.o_amax if self.exporting or bool(self.o_amax > 0) else None
        return int8_activation_quant(y, amax, self.o_relu6)

    def _bias(self, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor | None:
        """The conv's bias (a folded batch norm) for float weight ``w``; see :func:`integer_bias`."""
        return integer_bias(b, self.a_amax, w, self.a_unsigned) if self.integer else b

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """The layer's own arithmetic on the (fake-)quantized input and weight."""
        return F.conv2d(x, w, b, self.conv.stride, self.conv.padding, 1, self.conv.groups)

    @torch.no_grad()
    def prepare_export(self) -> None:
        w_fmt = get_format(self.w_format)
        w = self.conv.weight
        if isinstance(w_fmt, SymmetricInt) and w_fmt.bits == 8:
            scale = (per_channel_amax(w).clamp_min(1e-12) / w_fmt.qmax).flatten()
            self.register_buffer("w_scale", scale.float(), persistent=False)
            self.register_buffer("w_zero", torch.zeros(scale.numel(), dtype=torch.int32), persistent=False)
        elif not w_fmt.is_identity:
            self.conv.weight.copy_(w_fmt.quantize(w, per_channel_amax(w)))
        self.exporting = True


class StaticQLinear(StaticQConv):
    """The linear counterpart of :class:`StaticQConv`: same formats, scales and export, an
    ``nn.Linear`` (with bias) in ``conv`` (the name the weight packer looks for)."""

    def _bias(self, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor | None:
        return b  # a linear's bias was trained as is (QLinear does not round it)

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)


class ElasticLinear(nn.Module):
    """A linear layer whose input and output features are chosen per call (leading slices).
    ``groups`` > 1 stacks that many independent outputs (q, k and v), each sliced alike."""

    def __init__(self, fin: int, fout: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.fin, self.fout, self.groups = fin, fout, groups
        self.weight = nn.Parameter(torch.empty(groups * fout, fin))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.bias = nn.Parameter(torch.zeros(groups * fout)) if bias else None

    def active_weight(self, fin: int, fout: int) -> torch.Tensor:
        w = self.weight.view(self.groups, self.fout, self.fin)[:, :fout, :fin]
        return w.reshape(self.groups * fout, fin).contiguous()

    def active_bias(self, fout: int) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias.view(self.groups, self.fout)[:, :fout].reshape(-1).contiguous()

    def forward(self, x: torch.Tensor, fout: int, w_fmt: NumericFormat) -> torch.Tensor:
        w = self.active_weight(x.shape[-1], fout)
        if not w_fmt.is_identity:
            w = w_fmt.fake_quant(w, per_channel_amax(w))
        return F.linear(x, w, self.active_bias(fout))

    def static(self, fin: int, fout: int) -> nn.Linear:
        plain = nn.Linear(fin, self.groups * fout, bias=self.bias is not None)
        plain.weight.data.copy_(self.active_weight(fin, fout))
        if self.bias is not None:
            plain.bias.data.copy_(self.active_bias(fout))
        return plain


class ElasticLayerNorm(nn.LayerNorm):
    """Layer norm over the first ``C`` features of its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        return F.layer_norm(x, (c,), self.weight[:c], self.bias[:c], self.eps)

    def static(self, c: int) -> nn.LayerNorm:
        norm = nn.LayerNorm(c, eps=self.eps)
        norm.weight.data.copy_(self.weight[:c])
        norm.bias.data.copy_(self.bias[:c])
        return norm


class QuantizedUnit(nn.Module):
    """Base of the elastic quantized layers: owns the input quantizer ``q``, the integer-kernel
    output requantizer ``o`` and the layer's formats; subclasses hold the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.o = ActQuant(), OutQuant()
        self.w_format, self.a_format = "fp32", "fp32"

    def set_format(self, w_format: str, a_format: str) -> None:
        self.w_format, self.a_format = w_format, a_format
        self.q.set_format(a_format)
        self.o.set_format("int8" if integer_kernel(w_format, a_format) else "fp32")


class QLinear(QuantizedUnit):
    """An elastic linear with its input quantizer and integer-kernel output requantizer."""

    def __init__(self, fin: int, fout: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.linear = ElasticLinear(fin, fout, groups, bias)

    def forward(self, x: torch.Tensor, fout: int) -> torch.Tensor:
        return self.o(self.linear(self.q(x), fout, get_format(self.w_format)))

    def extract(self, fin: int, fout: int) -> StaticQLinear:
        return StaticQLinear(self.linear.static(fin, fout), self.w_format, self.a_format, self.q.static_amax(), self.o.amax,
                             a_unsigned=self.q.unsigned, requantize=self.o.active, o_relu6=self.o.relu6)


class QConvBN(QuantizedUnit):
    """An elastic conv with its input quantizer, integer-kernel output requantizer and batch norm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False):
        super().__init__()
        self.conv, self.bn = ElasticConv2d(cin, cout, kernel, stride, depthwise), ElasticBatchNorm2d(cout)

    def forward(self, x: torch.Tensor, cout: int, kernel: int) -> torch.Tensor:
        # Requantize after the batch norm: an integer kernel's accumulator holds the folded bias.
        # In eval mode the norm is folded into the weight before it is quantized, as in the
        # static subnet and the export (training normalises with batch statistics instead).
        if not self.training and foldable(self.w_format):
            return self.o(self._folded(self.q(x), cout, kernel))
        return self.o(self.bn(self.conv(self.q(x), cout, kernel, get_format(self.w_format))))

    def _folded(self, x: torch.Tensor, cout: int, kernel: int) -> torch.Tensor:
        conv, w_fmt = self.conv, get_format(self.w_format)
        w, b = folded_weight_bias(conv.active_weight(x.shape[1], cout, kernel), None, self.bn)
        if integer_kernel(self.w_format, self.a_format):
            b = integer_bias(b, self.q.amax, w, self.q.unsigned)
        if not w_fmt.is_identity:
            w = w_fmt.fake_quant(w, per_channel_amax(w))
        return F.conv2d(x, w, b, conv.stride, kernel // 2, 1, cout if conv.depthwise else 1)

    def extract(self, cin: int, cout: int, kernel: int) -> nn.Sequential:
        conv = self.conv
        groups = cout if conv.depthwise else 1
        plain = nn.Conv2d(cin, cout, kernel, conv.stride, kernel // 2, groups=groups, bias=False)
        plain.weight.data.copy_(conv.active_weight(cin, cout, kernel))
        norm = nn.BatchNorm2d(cout, eps=self.bn.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).data.copy_(getattr(self.bn, name)[:cout])
        static = StaticQConv(plain, self.w_format, self.a_format, self.q.static_amax(), self.o.amax,
                             a_unsigned=self.q.unsigned, requantize=self.o.active, o_relu6=self.o.relu6)
        return StaticConvBN(static, norm)


class StaticConvBN(nn.Sequential):
    """``Sequential(StaticQConv, BatchNorm2d)``, the static conv + batch norm pair, with the conv's
    integer-kernel requantizer applied after the norm (as :class:`QConvBN` computes). Folding the
    norm into the conv (``nasq.export.lower.fold_batch_norms``) replaces it by ``nn.Identity``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self[0], self[1]
        if isinstance(norm, nn.BatchNorm2d) and not norm.training and foldable(conv.w_format):
            return conv.requantize(conv.compute(x, norm))
        return conv.requantize(norm(conv.compute(x)))

    @property
    def int8_input(self) -> bool:
        return self[0].int8_input

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self[0].quantize_input(x)
