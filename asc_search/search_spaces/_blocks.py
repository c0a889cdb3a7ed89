"""The block registry: every block a typed, frozen spec with its compact string, its cost and its module.

A block string is timm's ``arch_def`` idea: ``<kind>_<token>_<token>...`` where each token is a key
letter and a value, and the activation is a bare name::

    conv_c16_k7_relu          standard conv + BN + act, 16 channels, 7×7
    dc_c32_k3_s2x1_tanh       decomposed convolution, stride 2 in frequency, 1 in time
    ds_c32_k5_relu            depthwise-separable convolution
    ir_c24_k3_e4_silu         inverted residual, expansion 4
    freq_c32_k3_n4_relu       FreqCNN frequency-distributed block, 4 sub-bands
    freqatt_c32_k3_n4_relu    the same with feature- and spatial-based attention
    maxpool_k5                max pooling 5×5 (stride = kernel)
    avgpool_k4x10             average pooling 4 (frequency) × 10 (time)

Tokens: ``c`` output channels, ``k`` kernel (``3`` or ``3x5``: frequency × time), ``s`` stride (same
form), ``e`` expansion ratio, ``n`` frequency sub-bands, ``r`` repeats (the first repeat carries the
stride, as in timm). A stride of 1 and a single repeat are left out; every other field is written, so each
spec has one canonical string: ``decode_block(spec.encode()) == spec``.

Each block declares, for an input of shape ``(C, H, W)`` = (channels, frequency bins, frames):
``out_shape`` (or an ``InfeasibleBlock`` with the reason), ``cost`` (INT8 weights, INT32 biases, MACs,
batch-norm channels folded, pooling window elements and peak live activation bytes, all by the
convention of ``asc_search.constraints``) and ``build`` (the PyTorch module). All modules use 4-D ops
only, so the INT8 TFLite export has no TRANSPOSE (RECIPES.md), and every conv is followed by its own
batch-norm so that the export folds it into the conv's bias.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional

from asc_search._errors import UserInputError
from asc_search._registry import NamedRegistry

ACTIVATIONS = ("relu", "tanh", "sigmoid", "silu", "hardswish")
_ACT_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "hardswish": nn.Hardswish}

Shape = tuple[int, int, int]


class InfeasibleBlock(Exception):
    """A block cannot be applied to its input (e.g. a stride or pool shrinks the map below 1×1)."""


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of ``ACTIVATIONS``).

    Raises:
        UserInputError: Unknown name; the message lists the valid ones.
    """
    try:
        return _ACT_MODULES[name]()
    except KeyError:
        raise UserInputError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}") from None


@dataclass(frozen=True, kw_only=True)
class BlockCost:
    """Complexity of one block on one input, by the tool's single counting convention.

    Args:
        weights: Weights, batch-norm folded (stored INT8, 1 byte each).
        biases: Biases, one per conv output channel after folding (stored INT32, 4 bytes each).
        macs: Multiply-accumulates of convolutions and dense layers.
        bn_channels: Batch-norm channels folded into convs (Keras counts 4 parameters for each).
        pool_ops: Elements read by pooling windows (output elements × window area; NeSsi counts these).
        peak_bytes: Largest sum of live INT8 tensors while the block runs, its input and output included.
    """

    weights: int = 0
    biases: int = 0
    macs: int = 0
    bn_channels: int = 0
    pool_ops: int = 0
    peak_bytes: int = 0


def _numel(s: Shape) -> int:
    return s[0] * s[1] * s[2]


def _conv_out(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """'Same'-padded conv output (padding k // 2 each side, odd kernels): ``ceil(size / stride)``."""
    return -(-h // stride[0]), -(-w // stride[1])


def _conv_cost(c_in: int, c_out: int, kernel: tuple[int, int], out_hw: tuple[int, int], groups: int = 1) -> BlockCost:
    w = c_out * (c_in // groups) * kernel[0] * kernel[1]
    return BlockCost(weights=w, biases=c_out, macs=w * out_hw[0] * out_hw[1], bn_channels=c_out)


def _sum(*costs: BlockCost, peak_bytes: int) -> BlockCost:
    return BlockCost(weights=sum(c.weights for c in costs), biases=sum(c.biases for c in costs),
                     macs=sum(c.macs for c in costs), bn_channels=sum(c.bn_channels for c in costs),
                     pool_ops=sum(c.pool_ops for c in costs), peak_bytes=peak_bytes)


class ConvBNAct(nn.Sequential):
    """``Conv2d`` (same padding, no bias) -> ``BatchNorm2d`` -> activation.

    Shapes:
        ``(N, c_in, H, W) -> (N, c_out, ceil(H / stride_f), ceil(W / stride_t))``.

    Args:
        c_in: Input channels.
        c_out: Output channels.
        kernel: ``(frequency, time)`` kernel, odd sizes.
        stride: ``(frequency, time)`` stride.
        act: Activation name, or ``None`` for none (a linear projection).
        groups: Conv groups (``c_in`` for depthwise).
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
                 act: str | None = "relu", groups: int = 1) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel[0] // 2, kernel[1] // 2), groups=groups,
                      bias=False),
            nn.BatchNorm2d(c_out)]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


_REQUIRED = object()


@dataclass(frozen=True, kw_only=True)
class BlockGene:
    """One per-stage gene of a block type: the trial parameter ``s{i}_{param}`` the search space samples and the
    spec field it sets.

    Args:
        param: Suffix of the trial parameter (``width`` gives ``s1_width``, ``s2_width``...).
        field: The block spec's field the value sets (``width``).
        options: Name of the ``SpaceOptions`` attribute that holds the choices (``widths``); "" for a gene whose
            choices are ``choices`` (a plugin's own gene).
        choices: The choices when ``options`` is "".
        parse: Turns a sampled value into the field's value (``3`` -> ``(3, 3)`` for a kernel).
        default: The sampled value assumed when a parameter dict lacks the gene (older trials); unset: required.
        smallest: Picks the choice of the cheapest network (``smallest_genomes``).
    """

    param: str
    field: str
    options: str = ""
    choices: tuple = ()
    parse: Callable[[Any], Any] = int
    default: Any = _REQUIRED
    smallest: Callable[[tuple], Any] = min

    def choices_in(self, options: Any) -> tuple:
        """The choices of this gene in a ``SpaceOptions`` (``options.<options>``, else ``choices``)."""
        return tuple(getattr(options, self.options)) if self.options else tuple(self.choices)

    def value(self, params: dict, prefix: str) -> Any:
        """The field value from a flat parameter dict (``prefix`` = ``s{i}_``).

        Raises:
            KeyError: The parameter is missing and the gene has no default.
        """
        key = prefix + self.param
        if key not in params and self.default is not _REQUIRED:
            return self.parse(self.default)
        return self.parse(params[key])


def _parse_stride(v: str) -> tuple[int, int]:
    a, _, b = str(v).partition("x")
    return int(a), int(b or a)


def _stride_area(choices: tuple) -> str:
    return max(choices, key=lambda st: int(st.partition("x")[0]) * int(st.partition("x")[2]))


STANDARD_GENES: dict[str, BlockGene] = {
    "width": BlockGene(param="width", field="width", options="widths"),
    "kernel": BlockGene(param="kernel", field="kernel", options="kernels", parse=lambda v: (int(v), int(v))),
    "stride": BlockGene(param="stride", field="stride", options="strides", parse=_parse_stride, default="1x1",
                        smallest=_stride_area),
    "expansion": BlockGene(param="expansion", field="expansion", options="expansions"),
    "subbands": BlockGene(param="subbands", field="n_subbands", options="n_subbands"),
    "act": BlockGene(param="act", field="activation", options="activations", parse=str,
                     smallest=lambda choices: choices[0]),
    "repeats": BlockGene(param="repeats", field="repeats", options="repeats", default=1,
                         smallest=lambda choices: 1),
}
"""The genes of the built-in blocks, by parameter suffix; a plugin block lists these and its own in its ``genes``."""


def _standard(*names: str) -> tuple[BlockGene, ...]:
    return tuple(STANDARD_GENES[n] for n in names)


@dataclass(frozen=True, kw_only=True)
class BlockSpec:
    """Base of all block specs: a frozen value with a canonical compact string. A block type is one subclass,
    registered with ``register_block``, that owns everything about it; the space, the complexity count, the
    builder and the pruning code ask it.

    Grammar and genes (class attributes):
        kind: The string's first token and the registry name.
        TOKENS: Field name -> token letter (extend it for a new field: ``{**BlockSpec.TOKENS, "dilation": "d"}``);
            ``kernel`` and ``stride`` take ``3`` or ``3x5``, other fields one integer, ``activation`` a bare name.
        odd_kernel: Whether kernel sizes must be odd ('same' padding); pooling windows need not be.
        searchable: Offered by the search space as a stage's block (``SpaceOptions.block_types``).
        can_start: May be the first stage's block (whose input has 1-3 channels).
        size_rank: Order in which ``smallest_genomes`` tries block types (lowest first: the cheapest).
        genes: The per-stage genes the space samples for this block, in sampling order (``BlockGene``).

    Pruning (``asc_search.search_spaces._pruning``, ``asc_search.trainers._prune``):
        prunable: Has a pruning rule: its output channels can be removed (the filters of ``output_convs``) and
            its input channels follow a pruned producer. A block without one makes its stage and the stage that
            feeds it unprunable.
        prune_refusal: Non-empty: the block takes pruned input but its own stage cannot be pruned (the reason).
        passes_channels: The block has no channels of its own and passes its input's through (pooling).
        partitions: Its output is this many equal concatenated branches, each losing the same count.
        input_partitions: It slices its input into this many equal parts, each losing the same count.
        hidden_path: Module path of its inner layer whose width is ``c_in · hidden_factor()`` ("" for none).

    Module and cost (methods): ``out_shape``, ``cost``, ``build``; ``output_convs`` for pruning.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    TOKENS: ClassVar[dict[str, str]] = {"width": "c", "kernel": "k", "stride": "s", "expansion": "e",
                                        "n_subbands": "n", "repeats": "r"}
    odd_kernel: ClassVar[bool] = True
    searchable: ClassVar[bool] = False
    can_start: ClassVar[bool] = True
    size_rank: ClassVar[int] = 100
    genes: ClassVar[tuple[BlockGene, ...]] = ()
    prunable: ClassVar[bool] = False
    prune_refusal: ClassVar[str] = ""
    passes_channels: ClassVar[bool] = False
    partitions: ClassVar[int] = 1
    input_partitions: ClassVar[int] = 1
    hidden_path: ClassVar[str] = ""

    repeats: int = 1

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.kind  # the registry's key

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise UserInputError(f"{self.kind}: repeats must be >= 1, got {self.repeats}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("kernel", "stride"):
                if not (isinstance(v, tuple) and len(v) == 2 and all(isinstance(i, int) and i >= 1 for i in v)):
                    raise UserInputError(f"{self.kind}: {f.name} must be two integers >= 1, got {v!r}")
            if f.name == "kernel" and self.odd_kernel and any(i % 2 == 0 for i in v):
                raise UserInputError(f"{self.kind}: kernel sizes must be odd (same padding), got {v}")
            if f.name == "activation" and v not in ACTIVATIONS:
                raise UserInputError(f"{self.kind}: unknown activation {v!r}; valid: {', '.join(ACTIVATIONS)}")
            if f.name == "width" and v < 1:
                raise UserInputError(f"{self.kind}: width must be >= 1, got {v}")

    def encode(self) -> str:
        """The canonical block string, e.g. ``conv_c16_k7_relu``."""
        parts = [self.kind]
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "activation" or (f.name in ("repeats", "stride") and v == f.default):
                continue
            token = self.TOKENS[f.name]
            if isinstance(v, tuple):
                parts.append(f"{token}{v[0]}" if v[0] == v[1] else f"{token}{v[0]}x{v[1]}")
            else:
                parts.append(f"{token}{v}")
        act = getattr(self, "activation", None)
        if act is not None:
            parts.append(act)
        return "_".join(parts)

    @classmethod
    def from_genes(cls, params: dict, prefix: str) -> BlockSpec:
        """The block a stage's sampled genes describe: each of ``cls.genes`` read from ``params[prefix + param]``.

        Raises:
            KeyError: A required gene is missing.
            UserInputError: A value out of range.
        """
        try:
            return cls(**{g.field: g.value(params, prefix) for g in cls.genes})
        except TypeError as exc:
            raise UserInputError(f"{cls.kind}: genes {[g.param for g in cls.genes]}: {exc}") from exc

    def scaled(self, width_multiplier: float, divisor: int = 4) -> BlockSpec:
        """This block with its width scaled (the seed's "channel restriction"), rounded to ``divisor``."""
        if not hasattr(self, "width") or width_multiplier == 1.0:
            return self
        return replace(self, width=round_channels(self.width * width_multiplier, divisor))

    # The three methods every block implements.
    def out_shape(self, s: Shape) -> Shape:  # pragma: no cover - abstract
        """Output shape for input ``s`` = ``(C, H, W)``.

        Raises:
            InfeasibleBlock: The block cannot be applied to ``s`` (with the reason).
        """
        raise NotImplementedError

    def cost(self, s: Shape) -> BlockCost:  # pragma: no cover - abstract
        """Complexity on input ``s`` (call ``out_shape`` first: it raises for infeasible inputs)."""
        raise NotImplementedError

    def build(self, s: Shape) -> nn.Module:  # pragma: no cover - abstract
        """The PyTorch module for input ``s``: ``(N, C, H, W) -> (N, *out_shape(s))``."""
        raise NotImplementedError

    # Pruning hooks (see the class docstring); the defaults suit a block without skip or inner layer.
    def output_convs(self, module: nn.Module) -> list[tuple[nn.Conv2d, int]]:
        """The convs of ``module`` (this block built) whose filters produce its output channels, each with the
        offset of its channels in the block's output (a conv's output channel ``i`` is channel ``offset + i``).

        Raises:
            NotImplementedError: The block has no pruning rule (``prunable`` is False).
        """
        raise NotImplementedError(f"{self.kind} has no pruning rule")

    def residual(self) -> bool:
        """Whether the block adds its input to its output when its input has ``width`` channels (a skip)."""
        return False

    def hidden_factor(self) -> int:
        """Channels of the inner layer at ``hidden_path`` per input channel (0: no such layer)."""
        return 0


def round_channels(channels: float, divisor: int = 4) -> int:
    """Round ``channels`` to the nearest multiple of ``divisor`` (at least ``divisor``), as timm's
    ``make_divisible`` does, never going more than 10 % below the unrounded value."""
    c = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if c < 0.9 * channels:
        c += divisor
    return c


@dataclass(frozen=True, kw_only=True)
class StridedConvSpec(BlockSpec):
    """Base of the conv-like blocks (``conv``, ``dc``, ``ds``, ``ir``): width, kernel, stride and activation,
    with 'same' padding.

    Shapes: ``(C, H, W) -> (width, ceil(H / s_f), ceil(W / s_t))``.
    """

    searchable: ClassVar[bool] = True
    prunable: ClassVar[bool] = True
    genes: ClassVar[tuple[BlockGene, ...]] = _standard("width", "kernel", "stride", "act", "repeats")

    width: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    activation: str = "relu"

    def out_shape(self, s: Shape) -> Shape:
        return (self.width, *_conv_out(s[1], s[2], self.kernel, self.stride))


@dataclass(frozen=True, kw_only=True)
class ConvSpec(StridedConvSpec):
    """Standard convolution: ``Conv2d(k, stride, same padding) -> BatchNorm -> activation``.

    Shapes: ``(C, H, W) -> (width, ceil(H / s_f), ceil(W / s_t))``.
    """

    kind: ClassVar[str] = "conv"
    size_rank: ClassVar[int] = 3

    def output_convs(self, module: nn.Module) -> list[tuple[nn.Conv2d, int]]:
        return [(module[0], 0)]

    def cost(self, s: Shape) -> BlockCost:
        out = self.out_shape(s)
        c = _conv_cost(s[0], self.width, self.kernel, out[1:])
        return replace(c, peak_bytes=_numel(s) + _numel(out))

    def build(self, s: Shape) -> nn.Module:
        return ConvBNAct(s[0], self.width, self.kernel, self.stride, self.activation)


class DecomposedConv2d(nn.Module):
    """Decomposed convolution of the Mel/Gammatone/CQT-ensemble seed (Pham et al., "A Low-Complexity Deep
    Learning Framework for Acoustic Scene Classification", 2021, §II-C, Fig. 2).

    Four parallel sub-convolutions with ``c_out / 4`` outputs each, concatenated along channels:
    a k×k conv on the first ``c_in / 4`` input channels, a 1×1 conv on the first ``c_in / 2``, a 1×1 conv
    on the last ``c_in / 2`` and a 1×1 conv on all ``c_in``. With k = 3 that is
    ``c_in · c_out · (9/16 + 1/4 + 1/4)`` weights, about 1/8.5 of a 3×3 conv's ``9 · c_in · c_out``.
    Each branch has its own batch-norm (equivalent to one after the concat, and folded by the export).

    Shapes:
        ``(N, c_in, H, W) -> (N, c_out, ceil(H / s_f), ceil(W / s_t))``.

    Args:
        c_in: Input channels, a multiple of 4.
        c_out: Output channels, a multiple of 4.
        kernel: Kernel of the spatial branch (odd sizes).
        stride: ``(frequency, time)`` stride of every branch.
        act: Activation after the concat.

    Raises:
        UserInputError: ``c_in`` or ``c_out`` not a multiple of 4.
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int] = (3, 3), stride: tuple[int, int] = (1, 1),
                 act: str = "relu") -> None:
        super().__init__()
        if c_in % 4 or c_out % 4:
            raise UserInputError(f"decomposed conv needs channels divisible by 4, got c_in={c_in}, c_out={c_out}")
        self.q_in, self.h_in = c_in // 4, c_in // 2
        q_out = c_out // 4
        self.spatial = ConvBNAct(self.q_in, q_out, kernel, stride, act=None)
        self.point_lo = ConvBNAct(self.h_in, q_out, (1, 1), stride, act=None)
        self.point_hi = ConvBNAct(c_in - self.h_in, q_out, (1, 1), stride, act=None)
        self.point_all = ConvBNAct(c_in, q_out, (1, 1), stride, act=None)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, c_in, H, W) -> (N, c_out, H', W')``."""
        y = torch.cat([self.spatial(x[:, :self.q_in]), self.point_lo(x[:, :self.h_in]),
                       self.point_hi(x[:, self.h_in:]), self.point_all(x)], dim=1)
        return self.act(y)


@dataclass(frozen=True, kw_only=True)
class DecomposedConvSpec(StridedConvSpec):
    """Decomposed convolution (``DecomposedConv2d``); input and output channels must be multiples of 4.

    Shapes: ``(C, H, W) -> (width, ceil(H / s_f), ceil(W / s_t))``.
    """

    kind: ClassVar[str] = "dc"
    can_start: ClassVar[bool] = False  # its input needs a multiple of 4 channels
    size_rank: ClassVar[int] = 2
    partitions: ClassVar[int] = 4  # the four concatenated branches
    input_partitions: ClassVar[int] = 4  # its branches slice the input by quarters

    def output_convs(self, module: nn.Module) -> list[tuple[nn.Conv2d, int]]:
        q = self.width // 4
        return [(b[0], i * q) for i, b in enumerate((module.spatial, module.point_lo, module.point_hi,
                                                      module.point_all))]

    def out_shape(self, s: Shape) -> Shape:
        if s[0] % 4 or self.width % 4:
            raise InfeasibleBlock(f"{self.encode()} needs input and output channels divisible by 4, "
                                  f"got {s[0]} -> {self.width}")
        return super().out_shape(s)

    def cost(self, s: Shape) -> BlockCost:
        out = self.out_shape(s)
        q = self.width // 4
        hw = out[1:]
        parts = [_conv_cost(s[0] // 4, q, self.kernel, hw), _conv_cost(s[0] // 2, q, (1, 1), hw),
                 _conv_cost(s[0] - s[0] // 2, q, (1, 1), hw), _conv_cost(s[0], q, (1, 1), hw)]
        # live: the input (until the last branch), the branch outputs (together one output), the concat
        peak = max(_numel(s) + _numel(s) // 2 + _numel(out) // 4, _numel(s) + _numel(out), 2 * _numel(out))
        return _sum(*parts, peak_bytes=peak)

    def build(self, s: Shape) -> nn.Module:
        return DecomposedConv2d(s[0], self.width, self.kernel, self.stride, self.activation)


@dataclass(frozen=True, kw_only=True)
class DepthwiseSeparableSpec(StridedConvSpec):
    """Depthwise-separable convolution (MobileNet): depthwise k×k + BN + act, pointwise 1×1 + BN + act.

    Shapes: ``(C, H, W) -> (width, ceil(H / s_f), ceil(W / s_t))``.
    """

    kind: ClassVar[str] = "ds"
    size_rank: ClassVar[int] = 0

    def output_convs(self, module: nn.Module) -> list[tuple[nn.Conv2d, int]]:
        return [(module[1][0], 0)]

    def cost(self, s: Shape) -> BlockCost:
        out = self.out_shape(s)
        mid = (s[0], *out[1:])
        peak = max(_numel(s) + _numel(mid), _numel(mid) + _numel(out))
        return _sum(_conv_cost(s[0], s[0], self.kernel, out[1:], groups=s[0]),
                    _conv_cost(s[0], self.width, (1, 1), out[1:]), peak_bytes=peak)

    def build(self, s: Shape) -> nn.Module:
        return nn.Sequential(ConvBNAct(s[0], s[0], self.kernel, self.stride, self.activation, groups=s[0]),
                             ConvBNAct(s[0], self.width, (1, 1), (1, 1), self.activation))


class InvertedResidual(nn.Module):
    """Inverted residual block (MobileNetV2; CP-Mobile of the CP-JKU DCASE systems), quantisation-ready.

    1×1 expansion + BN + act (when ``expansion > 1``), depthwise k×k + BN + act, 1×1 projection + BN, and a
    skip connection when the shapes allow (stride 1, ``c_in == c_out``). The skip adds through
    ``torch.ao.nn.quantized.FloatFunctional``, so PyTorch's quantisation flow observes and quantises the add.

    Shapes:
        ``(N, c_in, H, W) -> (N, c_out, ceil(H / s_f), ceil(W / s_t))``.

    Args:
        c_in: Input channels.
        c_out: Output channels.
        kernel: Depthwise kernel (odd sizes).
        stride: ``(frequency, time)`` stride of the depthwise conv.
        expansion: Expansion ratio (hidden channels ``c_in · expansion``).
        act: Activation.
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride: tuple[int, int], expansion: int,
                 act: str) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion > 1:
            layers.append(ConvBNAct(c_in, hidden, (1, 1), (1, 1), act))
        layers += [ConvBNAct(hidden, hidden, kernel, stride, act, groups=hidden),
                   ConvBNAct(hidden, c_out, (1, 1), (1, 1), act=None)]
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == (1, 1) and c_in == c_out
        self.skip_add = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, c_in, H, W) -> (N, c_out, H', W')``."""
        y = self.body(x)
        return self.skip_add.add(x, y) if self.use_skip else y


@dataclass(frozen=True, kw_only=True)
class InvertedResidualSpec(StridedConvSpec):
    """Inverted residual (``InvertedResidual``) with expansion ratio ``e``.

    Shapes: ``(C, H, W) -> (width, ceil(H / s_f), ceil(W / s_t))``.
    """

    kind: ClassVar[str] = "ir"
    size_rank: ClassVar[int] = 1
    hidden_path: ClassVar[str] = "body.0"
    genes: ClassVar[tuple[BlockGene, ...]] = _standard("width", "kernel", "stride", "expansion", "act", "repeats")
    expansion: int = 4

    def output_convs(self, module: nn.Module) -> list[tuple[nn.Conv2d, int]]:
        return [(module.body[-1][0], 0)]

    def residual(self) -> bool:
        return self.stride == (1, 1)

    def hidden_factor(self) -> int:
        return self.expansion if self.expansion > 1 else 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expansion < 1:
            raise UserInputError(f"ir: expansion must be >= 1, got {self.expansion}")

    def cost(self, s: Shape) -> BlockCost:
        out = self.out_shape(s)
        hidden = s[0] * self.expansion
        exp_in, exp_out = (hidden, s[1], s[2]), (hidden, *out[1:])
        parts = []
        if self.expansion > 1:
            parts.append(_conv_cost(s[0], hidden, (1, 1), s[1:]))
        parts += [_conv_cost(hidden, hidden, self.kernel, out[1:], groups=hidden),
                  _conv_cost(hidden, self.width, (1, 1), out[1:])]
        skip = _numel(s) if (self.stride == (1, 1) and s[0] == self.width) else 0
        steps = [_numel(s) + (_numel(exp_in) if self.expansion > 1 else 0),
                 skip + (_numel(exp_in) if self.expansion > 1 else _numel(s)) + _numel(exp_out),
                 skip + _numel(exp_out) + _numel(out)]
        if skip:
            steps.append(skip + 2 * _numel(out))
        return _sum(*parts, peak_bytes=max(steps))

    def build(self, s: Shape) -> nn.Module:
        return InvertedResidual(s[0], self.width, self.kernel, self.stride, self.expansion, self.activation)


def subband_sizes(n_bins: int, n_subbands: int) -> list[int]:
    """Heights of ``n_subbands`` contiguous frequency sub-bands covering ``n_bins`` (the first
    ``n_bins % n_subbands`` are one bin taller)."""
    base, extra = divmod(n_bins, n_subbands)
    return [base + (1 if i < extra else 0) for i in range(n_subbands)]


class ChannelAttention(nn.Module):
    """Feature-based (channel) attention from 4-D ops: GAP -> 1×1 conv -> ReLU -> 1×1 conv -> sigmoid -> mul.

    Shapes:
        ``(N, C, H, W) -> (N, C, H, W)``.

    Args:
        channels: C.
        hidden: Channels of the bottleneck.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``: ``x`` scaled per channel."""
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class SpatialAttention(nn.Module):
    """Spatial-based attention over the time-frequency map, from 4-D ops: the channel mean (a 1×1 conv with
    fixed weights 1/C would do the same) -> k×k conv -> sigmoid -> mul.

    Shapes:
        ``(N, C, H, W) -> (N, C, H, W)``.

    Args:
        kernel: Kernel of the attention conv (odd).
    """

    def __init__(self, kernel: tuple[int, int] = (3, 3)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``: ``x`` scaled per time-frequency bin."""
        return x * self.gate(self.conv(x.mean(dim=1, keepdim=True)))


class FreqDistributedConv(nn.Module):
    """The FreqCNN frequency-distributed block: a global conv over the whole input plus local convs over
    ``n`` contiguous frequency sub-bands (each its own weights), whose outputs are concatenated along
    frequency and added to the global output, then the activation; optionally followed by feature-based
    (channel) and spatial-based attention (the attention-based FreqCNN variant).

    Every conv has its own batch-norm, folded by the export. Only 4-D ops (slice, conv, concat, add, mean,
    mul), so the INT8 TFLite graph has no TRANSPOSE.

    Shapes:
        ``(N, c_in, H, W) -> (N, c_out, H, W)``.

    Args:
        c_in: Input channels.
        c_out: Output channels.
        n_bins: Input height H (frequency bins), fixed at build time.
        kernel: Kernel of every conv (odd sizes).
        n_subbands: Number of local sub-bands (at most H).
        act: Activation.
        attention: Add channel and spatial attention.
    """

    def __init__(self, c_in: int, c_out: int, n_bins: int, kernel: tuple[int, int], n_subbands: int, act: str,
                 attention: bool = False) -> None:
        super().__init__()
        self.sizes = subband_sizes(n_bins, n_subbands)
        self.global_conv = ConvBNAct(c_in, c_out, kernel, act=None)
        self.local_convs = nn.ModuleList(ConvBNAct(c_in, c_out, kernel, act=None) for _ in self.sizes)
        self.act = activation(act)
        self.channel_att = ChannelAttention(c_out, max(4, c_out // 4)) if attention else None
        self.spatial_att = SpatialAttention(kernel) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, c_in, H, W) -> (N, c_out, H, W)``."""
        bands, start = [], 0
        for size, conv in zip(self.sizes, self.local_convs, strict=True):
            bands.append(conv(x[:, :, start:start + size]))
            start += size
        y = self.act(self.global_conv(x) + torch.cat(bands, dim=2))
        if self.channel_att is not None:
            y = self.spatial_att(self.channel_att(y))
        return y


@dataclass(frozen=True, kw_only=True)
class FreqSpec(BlockSpec):
    """FreqCNN frequency-distributed block (``FreqDistributedConv``), ``n`` sub-bands, stride 1.

    Shapes: ``(C, H, W) -> (width, H, W)``.
    """

    kind: ClassVar[str] = "freq"
    searchable: ClassVar[bool] = True
    prunable: ClassVar[bool] = True
    size_rank: ClassVar[int] = 4
    genes: ClassVar[tuple[BlockGene, ...]] = _standard("width", "kernel", "subbands", "act", "repeats")
    width: int
    kernel: tuple[int, int] = (3, 3)
    n_subbands: int = 4
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_subbands < 1:
            raise UserInputError(f"{self.kind}: n_subbands must be >= 1, got {self.n_subbands}")

    def out_shape(self, s: Shape) -> Shape:
        if self.n_subbands > s[1]:
            raise InfeasibleBlock(f"{self.encode()} splits {s[1]} frequency bins into {self.n_subbands} sub-bands")
        return (self.width, s[1], s[2])

    def _attention_cost(self, out: Shape) -> tuple[list[BlockCost], int]:
        return [], 0

    def cost(self, s: Shape) -> BlockCost:
        out = self.out_shape(s)
        parts = [_conv_cost(s[0], self.width, self.kernel, out[1:])]
        parts += [_conv_cost(s[0], self.width, self.kernel, (h, s[2])) for h in subband_sizes(s[1], self.n_subbands)]
        # live: input + global output + local outputs (together one output), then the concat and the add
        peak = max(_numel(s) + 2 * _numel(out), 3 * _numel(out))
        att, att_peak = self._attention_cost(out)
        return _sum(*parts, *att, peak_bytes=max(peak, att_peak))

    def build(self, s: Shape) -> nn.Module:
        return FreqDistributedConv(s[0], self.width, s[1], self.kernel, self.n_subbands, self.activation)

    def output_convs(self, module: nn.Module) -> list[tuple[nn.Conv2d, int]]:
        return [(module.global_conv[0], 0)] + [(c[0], 0) for c in module.local_convs]


@dataclass(frozen=True, kw_only=True)
class FreqAttentionSpec(FreqSpec):
    """The attention-based FreqCNN block: ``freq`` followed by feature-based (channel) and spatial-based
    attention (``ChannelAttention``, ``SpatialAttention``).

    Shapes: ``(C, H, W) -> (width, H, W)``.
    """

    kind: ClassVar[str] = "freqatt"
    size_rank: ClassVar[int] = 5
    prune_refusal: ClassVar[str] = "has channel and spatial attention, which cannot be pruned exactly"

    def _attention_cost(self, out: Shape) -> tuple[list[BlockCost], int]:
        c, h, w = out
        hidden = max(4, c // 4)
        fc1 = BlockCost(weights=c * hidden, biases=hidden, macs=c * hidden)
        fc2 = BlockCost(weights=hidden * c, biases=c, macs=hidden * c)
        sp = BlockCost(weights=self.kernel[0] * self.kernel[1], biases=1, macs=self.kernel[0] * self.kernel[1] * h * w)
        # live: y and its channel-scaled copy; then that copy, the mean map, the gate and the output
        peak = max(2 * _numel(out) + c, 2 * _numel(out) + 2 * h * w)
        return [fc1, fc2, sp], peak

    def build(self, s: Shape) -> nn.Module:
        return FreqDistributedConv(s[0], self.width, s[1], self.kernel, self.n_subbands, self.activation,
                                   attention=True)


@dataclass(frozen=True, kw_only=True)
class MaxPoolSpec(BlockSpec):
    """Max pooling, window = stride = ``kernel`` (frequency × time), floor.

    Shapes: ``(C, H, W) -> (C, H // k_f, W // k_t)``.
    """

    kind: ClassVar[str] = "maxpool"
    odd_kernel: ClassVar[bool] = False
    passes_channels: ClassVar[bool] = True
    kernel: tuple[int, int] = (2, 2)

    def out_shape(self, s: Shape) -> Shape:
        h, w = s[1] // self.kernel[0], s[2] // self.kernel[1]
        if h < 1 or w < 1:
            raise InfeasibleBlock(f"{self.encode()} shrinks the {s[1]}x{s[2]} map below 1x1")
        return (s[0], h, w)

    def cost(self, s: Shape) -> BlockCost:
        out = self.out_shape(s)
        return BlockCost(pool_ops=_numel(out) * self.kernel[0] * self.kernel[1], peak_bytes=_numel(s) + _numel(out))

    def build(self, s: Shape) -> nn.Module:
        return nn.MaxPool2d(self.kernel)


@dataclass(frozen=True, kw_only=True)
class AvgPoolSpec(MaxPoolSpec):
    """Average pooling, window = stride = ``kernel`` (frequency × time), floor.

    Shapes: ``(C, H, W) -> (C, H // k_f, W // k_t)``.
    """

    kind: ClassVar[str] = "avgpool"

    def build(self, s: Shape) -> nn.Module:
        return nn.AvgPool2d(self.kernel)


BLOCKS: NamedRegistry[type[BlockSpec]] = NamedRegistry("block kind", valid_label="valid")
"""The block registry: spec classes by ``kind``."""


def register_block(cls: type[BlockSpec]) -> type[BlockSpec]:
    """Add a block spec class to the registry under ``cls.kind`` (usable as a decorator).

    Raises:
        ValueError: The kind is taken, the class is no ``BlockSpec`` with a lower-case ``kind``, a field has no
            token letter in ``TOKENS``, or a gene sets no field of the class.
    """
    if not (isinstance(cls, type) and issubclass(cls, BlockSpec)) or not re.fullmatch(r"[a-z]+", cls.kind or ""):
        raise ValueError(f"register_block needs a BlockSpec subclass with a lower-case kind, got {cls!r}")
    names = {f.name for f in fields(cls)}
    untokened = sorted(names - set(cls.TOKENS) - {"activation"})
    if untokened:
        raise ValueError(f"block kind {cls.kind!r}: field(s) {untokened} have no token letter in TOKENS")
    bad = [g.param for g in cls.genes if g.field not in names]
    if bad:
        raise ValueError(f"block kind {cls.kind!r}: gene(s) {bad} set no field of {cls.__name__}")
    return BLOCKS.register(cls)


def unregister_block(kind: str) -> type[BlockSpec]:
    """Remove and return the spec class of ``kind`` (a plugin's or a test's registration undone).

    Raises:
        UserInputError: Unknown kind; the message lists the valid ones.
    """
    return BLOCKS.unregister(kind)


def list_blocks() -> list[str]:
    """Registered block kinds, sorted."""
    return [cls.kind for cls in BLOCKS.all()]


def block_class(kind: str) -> type[BlockSpec]:
    """The spec class of ``kind``.

    Raises:
        UserInputError: Unknown kind; the message lists the valid ones.
    """
    return BLOCKS.get(kind)


for _cls in (ConvSpec, DecomposedConvSpec, DepthwiseSeparableSpec, InvertedResidualSpec, FreqSpec,
             FreqAttentionSpec, MaxPoolSpec, AvgPoolSpec):
    register_block(_cls)

_TOKEN = re.compile(r"^([a-z]+?)(\d+(?:x\d+)?)$")


def decode_block(text: str) -> BlockSpec:
    """Parse a block string (``conv_c16_k7_relu``) into its typed spec.

    Raises:
        UserInputError: Unknown kind, token or activation, or a value out of range; the message quotes the
            string and says what is valid.
    """
    parts = text.strip().split("_")
    cls = block_class(parts[0])
    names = {f.name for f in fields(cls)}
    by_token = {t: n for n, t in cls.TOKENS.items() if n in names}
    kwargs: dict = {}
    for tok in parts[1:]:
        if tok in ACTIVATIONS and "activation" in names:
            kwargs["activation"] = tok
            continue
        m = _TOKEN.match(tok)
        if not m or m.group(1) not in by_token:
            valid = ", ".join(f"{t}<{n}>" for t, n in by_token.items())
            acts = f", or an activation ({', '.join(ACTIVATIONS)})" if "activation" in names else ""
            raise UserInputError(f"block {text!r}: bad token {tok!r}; valid tokens for {cls.kind}: {valid}{acts}")
        name, value = by_token[m.group(1)], m.group(2)
        if name in ("kernel", "stride"):
            a, _, b = value.partition("x")
            kwargs[name] = (int(a), int(b or a))
        elif "x" in value:
            raise UserInputError(f"block {text!r}: {name} takes one integer, got {value!r}")
        else:
            kwargs[name] = int(value)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise UserInputError(f"block {text!r}: {exc}") from exc

