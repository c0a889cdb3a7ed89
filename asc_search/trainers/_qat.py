"""Quantisation-aware fine-tuning (QAT): fine-tune a trained float model under simulated INT8, so that the
accuracy of its full-integer INT8 export is the one validated in training, not hoped for.

Method: Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018 (fake quantisation in the forward pass, straight-through gradients, batch-norm folded into
the conv weights while training, §3.2 and Fig. C.8); Krishnamoorthi, "Quantizing deep convolutional networks
for efficient inference: A whitepaper", 2018 (per-channel weights, fine-tuning from a float model, §3-4).

Implementation: PyTorch's FX graph-mode QAT (``torch.ao.quantization.quantize_fx.prepare_qat_fx``) with the
``x86`` QAT configuration (fbgemm's successor): its fused patterns (conv + batch-norm (+ ReLU), so the fold is
trained), per-channel symmetric int8 weights, per-tensor affine activations with moving-average min/max
observers, fixed output ranges for sigmoid and tanh. Scheme ``"tflite"`` (the default) keeps all of that and
changes the two numbers in which x86 differs from the TFLite int8 spec the model is deployed with: weights on
the narrow grid ``[-127, 127]`` with the scale taken from the current weights (``max |w| / 127`` per output
channel, what the TFLite converter computes), and activations on all 8 bits (x86's ``reduce_range`` uses 7).
Scheme ``"x86"`` is PyTorch's configuration unchanged.

The QAT model trains with the ordinary loop (``asc_search.trainers.fit``); ``qat_to_float`` then moves its
weights back into the plain ``CandidateCNN``, which the normal export path (``export_int8_tflite``) converts and
re-calibrates. With ``snap_weights`` (default) the float model gets the weights the QAT model computed with:
each batch-norm-folded weight on TFLite's per-channel grid, so the exported float model and its INT8 file use
the same weights and their predictions differ only by activation rounding.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import FakeQuantizeBase

from asc_search._errors import AscSearchError, UserInputError
from asc_search.frontends import ClipFeatures
from asc_search.trainers._fit import FitResult, Normalisation, TrainSettings, fit

log = logging.getLogger(__name__)

QAT_BACKEND = "x86"
QAT_SCHEMES = ("tflite", "x86")

# torch 2.13 marks torch.ao.quantization as deprecated (moving to torchao) and its x86 activation observer's
# ``reduce_range`` as deprecated: both are notices about the API, silenced here only, around our own calls.
_DEPRECATION_MESSAGES = (r"(?s).*torch\.ao\.quantization is deprecated", r"(?s).*reduce_range will be deprecated")


@contextlib.contextmanager
def _quiet_ao_deprecation():
    with warnings.catch_warnings():
        for message in _DEPRECATION_MESSAGES:
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


class QATModel(nn.Module):
    """A model prepared for quantisation-aware training (returned by ``prepare_qat``).

    Wraps the FX ``GraphModule`` that ``prepare_qat_fx`` builds, so that ``eval()`` also freezes the activation
    observers (validation batches must not move the learnt ranges) and ``train()`` lets them observe again;
    weight observers always follow the current weights. Fake quantisation stays on in both modes (the validation
    accuracy ``fit`` reports is the simulated INT8 model's).

    Shapes:
        ``(batch, C, F, T) -> (batch, n_classes)`` logits, as the float model.

    Args:
        graph_module: The prepared model (fake-quantisers inserted, conv + BN fused).
        input_shape: ``(C, F, T)`` of one patch (kept for ``qat_to_float``).
        scheme: The quantisation scheme it was prepared with (one of ``QAT_SCHEMES``).
    """

    def __init__(self, graph_module: nn.Module, input_shape: tuple[int, ...], scheme: str) -> None:
        super().__init__()
        self.qat = graph_module
        self.input_shape = tuple(input_shape)
        self.scheme = scheme

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, C, F, T) -> (batch, n_classes)`` logits, fake-quantised."""
        return self.qat(x)

    def train(self, mode: bool = True) -> QATModel:
        """Set the mode; activation observers learn ranges in training mode only."""
        super().train(mode)
        with _quiet_ao_deprecation():
            for name, module in self.named_modules():
                if not isinstance(module, FakeQuantizeBase) or name.endswith("weight_fake_quant"):
                    continue
                if mode:
                    module.enable_observer()
                else:
                    module.disable_observer()
        return self

    def set_fake_quant(self, enabled: bool) -> QATModel:
        """Turn fake quantisation on (the simulated INT8 model) or off (the float model its weights define)."""
        with _quiet_ao_deprecation():
            self.apply(torch.ao.quantization.enable_fake_quant if enabled
                       else torch.ao.quantization.disable_fake_quant)
        return self


def _qconfig_mapping(scheme: str):
    """The x86 QAT ``QConfigMapping``; for ``"tflite"`` with TFLite's weight grid and 8-bit activations."""
    from torch.ao.quantization import (
        FakeQuantize,
        FusedMovingAvgObsFakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        get_default_qat_qconfig_mapping,
    )

    mapping = get_default_qat_qconfig_mapping(QAT_BACKEND)
    if scheme == "tflite":
        activation = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
            qscheme=torch.per_tensor_affine, reduce_range=False)
        # the unfused FakeQuantize: the fused kernel divides by 126.5, not by TFLite's 127
        weight = FakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127, quant_max=127, dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric, averaging_constant=1.0)
        mapping.set_global(QConfig(activation=activation, weight=weight))
    return mapping


def _prepare_fx(model: nn.Module, example_input: torch.Tensor, scheme: str) -> nn.Module:
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with _quiet_ao_deprecation():
        return prepare_qat_fx(model.train(), _qconfig_mapping(scheme), (example_input,))


class _NamingTracer(torch.fx.Tracer):
    """An FX tracer that remembers which module it is inside, to name the layer a trace fails in."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(self.path_of_module(m))
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return out


def _failing_layer(model: nn.Module) -> str:
    """``"<path> (<class>): <error>"`` of the innermost module whose forward FX cannot trace."""
    tracer = _NamingTracer()
    try:
        tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - we only want where it fails
        if not tracer.stack:
            return f"{type(model).__name__}.forward: {type(exc).__name__}: {exc}"
        path = tracer.stack[-1]
        return f"{path} ({type(model.get_submodule(path)).__name__}): {type(exc).__name__}: {exc}"
    return "none found (the model traces on its own; the quantisation pass failed)"


def prepare_qat(model: nn.Module, example_input: torch.Tensor, *, scheme: str = "tflite") -> QATModel:
    """A quantisation-aware-training copy of ``model`` (``model`` itself is not changed).

    PyTorch FX graph mode QAT with ``get_default_qat_qconfig_mapping("x86")``: every conv + batch-norm
    (+ ReLU) is fused into one QAT module that folds the batch-norm into the fake-quantised weights while it
    trains (Jacob et al. 2018, §3.2); weights are fake-quantised per output channel (symmetric int8), and
    activations per tensor (affine), with moving-average min/max observers. Sigmoid and tanh outputs get
    fixed ranges, as in TFLite. ``scheme="tflite"`` puts the weights on TFLite's ``[-127, 127]`` grid (scale
    from the current weights) and uses 8-bit activations; ``"x86"`` is PyTorch's x86 configuration as is.

    Args:
        model: A float ``CandidateCNN`` (any ``(batch, C, F, T) -> (batch, n_classes)`` module FX can trace).
        example_input: One batch of model input, shape ``(batch, C, F, T)`` float32 (normalised features; only
            its shape and dtype matter).
        scheme: ``"tflite"`` (default) or ``"x86"``.

    Returns:
        A ``QATModel`` in training mode, on the device of ``model``: train it with ``fit``; its weights go back
        with ``qat_to_float``.

    Raises:
        UserInputError: ``example_input`` is not a 4-D float tensor, or ``scheme`` is unknown.
        AscSearchError: The model cannot be prepared (e.g. data-dependent control flow that FX cannot trace);
            the message names the layer.
    """
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4 or not example_input.is_floating_point():
        got = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise UserInputError(f"example_input must be a float tensor (batch, C, F, T), got {got}")
    if scheme not in QAT_SCHEMES:
        raise UserInputError(f"unknown QAT scheme {scheme!r}; valid: {', '.join(QAT_SCHEMES)}")
    try:
        gm = _prepare_fx(copy.deepcopy(model), example_input, scheme)
    except Exception as exc:  # noqa: BLE001 - FX raises TraceError, TypeError, RuntimeError, ...
        raise AscSearchError(f"cannot prepare {type(model).__name__} for quantisation-aware training: "
                             f"tracing fails in layer {_failing_layer(copy.deepcopy(model))}") from exc
    return QATModel(gm, tuple(example_input.shape[1:]), scheme).train()


def _reference_mapping(template: nn.Module, input_shape: tuple[int, ...], scheme: str
                       ) -> tuple[dict[str, str], list[tuple[str, float | None]]]:
    """How ``prepare_qat(template)`` stores the template's tensors, found by preparing a fresh copy.

    Returns:
        ``({qat_key: float_key}, [(qat_module_path, bn_eps or None), ...])``: the keys are matched by tensor
        identity (the QAT modules take over the float modules' parameters and buffers, ``from_float``); the
        list holds every module with fake-quantised weights, with its batch-norm's epsilon when it is fused.
    """
    work = copy.deepcopy(template).cpu()
    owner = {id(t): name for name, t in (*work.named_parameters(), *work.named_buffers())}
    wrapped = QATModel(_prepare_fx(work, torch.zeros(1, *input_shape), scheme), input_shape, scheme)
    keys = {name: owner[id(t)] for name, t in (*wrapped.named_parameters(), *wrapped.named_buffers())
            if id(t) in owner}
    weighted = [(name, float(m.bn.eps) if isinstance(getattr(m, "bn", None), nn.modules.batchnorm._BatchNorm)
                 else None) for name, m in wrapped.named_modules() if hasattr(m, "weight_fake_quant")]
    return keys, weighted


def snap_to_int8_grid(folded: torch.Tensor) -> torch.Tensor:
    """Round weights to TFLite's int8 per-channel grid: ``round(w / s) * s`` with ``s = max |w| / 127`` per
    output channel (axis 0), integers in ``[-127, 127]``, halves away from zero (the TFLite int8 quantisation
    spec for conv and dense weights, and its converter's rounding). A channel of zeros stays zero.

    Shapes:
        ``(C_out, ...) -> (C_out, ...)``.
    """
    amax = folded.abs().reshape(len(folded), -1).amax(dim=1)
    scale = (amax / 127).reshape(-1, *([1] * (folded.dim() - 1)))
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    v = folded / safe
    k = torch.clamp(torch.sign(v) * torch.floor(v.abs() + 0.5), -127, 127)
    return torch.where(scale > 0, k * safe, folded)


def _snap(state: dict[str, torch.Tensor], weighted: list[tuple[str, float | None]]) -> dict[str, torch.Tensor]:
    """``state`` (QAT keys) with every fake-quantised weight snapped to the grid of its batch-norm-folded
    value: the folded weight ``w * gamma / sqrt(var + eps)`` becomes ``snap_to_int8_grid`` of itself, the
    batch-norm is kept (so folding it again at export gives the grid values, up to float rounding)."""
    out = dict(state)
    for path, eps in weighted:
        w = state[f"{path}.weight"]
        shape = (-1, *([1] * (w.dim() - 1)))
        if eps is None:
            out[f"{path}.weight"] = snap_to_int8_grid(w)
            continue
        factor = (state[f"{path}.bn.weight"] / torch.sqrt(state[f"{path}.bn.running_var"] + eps)).reshape(shape)
        snapped = snap_to_int8_grid(w * factor)
        out[f"{path}.weight"] = torch.where(factor != 0, snapped / torch.where(factor != 0, factor, 1.0), w)
    return out


def qat_to_float(qat_model: QATModel, template: nn.Module, *, snap_weights: bool = True) -> dict[str, torch.Tensor]:
    """The QAT-trained weights as a state dict of the plain float model.

    Kept: every conv / dense weight and bias, and every batch-norm's affine parameters and running statistics
    (the QAT conv + BN modules keep them apart and fold them only on the fly). With ``snap_weights`` (default)
    each weight is the one the QAT model computes with: its batch-norm-folded value rounded to TFLite's
    per-channel int8 grid (``snap_to_int8_grid``; the batch-norm itself is unchanged, so folding it again at
    export gives the grid values up to float rounding). The float model is then the QAT model with only the
    activation fake-quantisers off (for the ``"tflite"`` scheme; ``"x86"`` trains on its own grid, a step of
    ``max |w| / 127.5``), and the INT8 export quantises its weights without error: INT8 and float differ only
    by activation rounding. Without, the weights are the QAT model's float ("shadow") weights: the float model
    is the QAT model with all fake quantisation off. Not kept: the fake-quantisers' activation ranges and
    observer state; the INT8 export (``export_int8_tflite``: onnx2tf and the TFLite converter) re-calibrates
    activation ranges with min/max on its representative dataset.

    Args:
        qat_model: A model from ``prepare_qat`` (trained or not).
        template: A float model of the same architecture (e.g. the one given to ``prepare_qat``); it is not
            changed.
        snap_weights: Put the weights on the int8 grid (see above).

    Returns:
        A state dict with exactly ``template.state_dict()``'s keys, CPU tensors: ``template.load_state_dict``
        takes it.

    Raises:
        UserInputError: ``qat_model`` is not a ``QATModel``, or does not come from ``template``'s architecture
            (the message names the first key that does not match).
        AscSearchError: A tensor of the float model has no counterpart in the QAT model.
    """
    if not isinstance(qat_model, QATModel):
        raise UserInputError(f"qat_model must come from prepare_qat (a QATModel), got {type(qat_model).__name__}")
    mapping, weighted = _reference_mapping(template, qat_model.input_shape, qat_model.scheme)
    qat_state = {k: v.detach().to("cpu", copy=True) for k, v in qat_model.state_dict().items()}
    float_state = template.state_dict()
    for qat_key, float_key in mapping.items():
        if qat_key not in qat_state:
            raise UserInputError(f"qat_model has no {qat_key!r}: it was not prepared from this template's "
                                 f"architecture")
        if qat_state[qat_key].shape != float_state[float_key].shape:
            raise UserInputError(f"{qat_key!r} has shape {tuple(qat_state[qat_key].shape)}, the template's "
                                 f"{float_key!r} {tuple(float_state[float_key].shape)}: not the same architecture")
    if snap_weights:
        qat_state = _snap(qat_state, weighted)
    out = {float_key: qat_state[qat_key] for qat_key, float_key in mapping.items()}
    missing = [k for k in float_state if k not in out]
    if missing:
        raise AscSearchError(f"the QAT model carries no tensor for {missing[:5]} of the float model")
    return {k: out[k] for k in float_state}


def qat_finetune(model: nn.Module, features: ClipFeatures, labels: np.ndarray, train_clips: np.ndarray,
                 val_clips: np.ndarray, norm: Normalisation, settings: TrainSettings, device: str | torch.device = "cpu",
                 *, on_epoch: Callable[[dict], None] | None = None, scheme: str = "tflite",
                 snap_weights: bool = True, deterministic: bool = False) -> FitResult:
    """Quantisation-aware fine-tuning of a trained float model, in place.

    ``prepare_qat`` -> ``fit`` (the caller's ``settings``: typically a few epochs at a tenth of the learning
    rate) -> ``qat_to_float`` -> ``model.load_state_dict``. Afterwards ``model`` is the float model to export
    (``export_int8_tflite``), carrying the QAT-trained weights (on the int8 grid with ``snap_weights``): its
    INT8 export has exactly these weights; the export re-calibrates the activation ranges.

    Args:
        model: The trained float ``CandidateCNN``; updated in place (left on the CPU).
        features: Clip features.
        labels: Class index per clip, shape ``(n_clips,)``.
        train_clips: Indices of training clips.
        val_clips: Indices of validation clips (best-epoch selection on the fake-quantised model).
        norm: Deltas and standardisation of the model input.
        settings: Fine-tuning hyper-parameters (epochs, learning rate, ...).
        device: ``"cpu"`` or ``"cuda"``.
        on_epoch: Passed to ``fit`` (per-epoch metrics of the fake-quantised model).
        scheme: Quantisation scheme of ``prepare_qat``.
        snap_weights: Of ``qat_to_float``.
        deterministic: Of ``fit`` (deterministic kernels on one thread, settings restored afterwards).

    Returns:
        ``fit``'s result with ``state_dict`` replaced by the float state dict loaded into ``model``;
        ``val_metrics`` / ``val_probs`` are the fake-quantised (simulated INT8) model's at the best epoch.

    Raises:
        UserInputError: Unknown ``scheme``.
        AscSearchError: The model cannot be prepared (names the layer).
        FloatingPointError: The loss became NaN or infinite.
    """
    input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        x, _ = features.patches(np.asarray(train_clips[:1]))
        input_shape = norm.apply(x[:1]).shape[1:]
    example = torch.zeros(1, *input_shape)
    model.cpu()
    qat_model = prepare_qat(model, example, scheme=scheme)
    with _quiet_ao_deprecation():
        result = fit(qat_model, features, labels, train_clips, val_clips, norm, settings, on_epoch=on_epoch,
                     device=device, deterministic=deterministic)
    qat_model.cpu()
    state = qat_to_float(qat_model, model, snap_weights=snap_weights)
    model.load_state_dict(state)
    log.info("QAT fine-tuning: best epoch %d, fake-quantised validation accuracy %.4f", result.best_epoch,
             result.val_metrics["accuracy"])
    result.state_dict = state
    return result
