"""Quantisation-aware fine-tuning: preparation with the x86 QAT config, training, and the way back to the float
CandidateCNN that the INT8 export takes."""

import warnings

import pytest
import torch
from torch import nn
from torch.ao.nn.intrinsic import qat as nniqat
from torch.ao.quantization import FakeQuantizeBase, FusedMovingAvgObsFakeQuantize

from asc_search import AscSearchError, UserInputError
from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, build_model
from asc_search.trainers import TrainSettings
from asc_search.trainers._qat import QATModel, prepare_qat, qat_finetune, qat_to_float, snap_to_int8_grid

_FRONTEND = FrontendGenes(sample_rate_hz=8000, n_bins=32, hop_ms=32.0, chunk_s=1.0)
BLOCKS = {
    "conv": "conv_c12_k5x3_s2x1_relu",
    "dc": "dc_c12_k3_tanh",
    "ds": "ds_c12_k5_s2_hardswish",
    "ir": "ir_c8_k3_e3_silu",
    "freq": "freq_c8_k3_n3_sigmoid",
    "freqatt": "freqatt_c8_k3_n2_relu",
}


def _model(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    arch = ArchSpec(stages=(("conv_c8_k3_relu", "maxpool_k2"), (BLOCKS[kind],)), head="gap", head_width=16)
    return build_model(Genome(frontend=_FRONTEND, arch=arch), 10)


def _train_steps(qat: QATModel, x: torch.Tensor, steps: int = 2) -> None:
    opt = torch.optim.SGD(qat.parameters(), lr=0.05)
    y = torch.arange(len(x)) % 10
    qat.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(qat(x), y).backward()
        opt.step()


def _act_fake_quants(qat: QATModel) -> list[FakeQuantizeBase]:
    return [m for n, m in qat.named_modules() if isinstance(m, FakeQuantizeBase) and not n.endswith("weight_fake_quant")]


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_prepare_qat_fuses_conv_bn_and_inserts_x86_fake_quant(kind):
    model = _model(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qat = prepare_qat(model, torch.zeros(1, *model.input_shape), scheme="x86")
    # every conv + batch-norm of the float model became one QAT module that folds the BN while it trains
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused = [m for m in qat.modules() if isinstance(m, (nniqat.ConvBn2d, nniqat.ConvBnReLU2d))]
    assert n_bn > 0 and len(fused) == n_bn
    assert all(isinstance(m.bn, nn.BatchNorm2d) for m in fused)
    # x86's QAT config: per-channel symmetric int8 weights, 7-bit affine uint8 activations
    weights = [m.weight_fake_quant for m in qat.modules() if hasattr(m, "weight_fake_quant")]
    n_weighted = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(weights) == n_weighted
    for fq in weights:
        assert isinstance(fq, FusedMovingAvgObsFakeQuantize)
        assert (fq.dtype, fq.qscheme, fq.quant_min, fq.quant_max) == (torch.qint8, torch.per_channel_symmetric,
                                                                        -128, 127)
    acts = [fq for fq in _act_fake_quants(qat) if isinstance(fq, FusedMovingAvgObsFakeQuantize)]
    assert acts and all((fq.dtype, fq.quant_min, fq.quant_max) == (torch.quint8, 0, 127) for fq in acts)
    # the float model is untouched and shares no tensor with the copy
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not {id(p) for p in model.parameters()} & {id(p) for p in qat.parameters()}


def test_tflite_scheme_uses_tflites_int8_grids():
    model = _model("ir")
    qat = prepare_qat(model, torch.zeros(1, *model.input_shape))
    assert qat.scheme == "tflite"
    for m in qat.modules():
        if hasattr(m, "weight_fake_quant"):
            fq = m.weight_fake_quant
            assert (fq.qscheme, fq.quant_min, fq.quant_max) == (torch.per_channel_symmetric, -127, 127)
    # sigmoid / tanh keep x86's fixed output ranges (TFLite's too); the others are full 8-bit
    learnt = [fq for fq in _act_fake_quants(qat) if isinstance(fq, FusedMovingAvgObsFakeQuantize)]
    assert learnt and all((fq.quant_min, fq.quant_max) == (0, 255) for fq in learnt)


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_qat_model_trains_and_round_trips_into_the_float_model(kind):
    model = _model(kind)
    x = torch.randn(24, *model.input_shape)
    qat = prepare_qat(model, x[:1])
    scales = [fq.scale.clone() for fq in _act_fake_quants(qat)]
    _train_steps(qat, x)
    assert any(not torch.equal(s, fq.scale) for s, fq in zip(scales, _act_fake_quants(qat), strict=True))
    qat.eval()
    with torch.no_grad():
        fake_quantised = qat(x)
        for fq in _act_fake_quants(qat):
            fq.disable_fake_quant()
        weights_quantised = qat(x)  # activations in float, weights on the int8 grid
        qat.set_fake_quant(False)
        plain = qat(x)
    assert not torch.allclose(fake_quantised, plain, atol=1e-4)

    shadow = _model(kind, seed=1)
    state = qat_to_float(qat, shadow, snap_weights=False)
    assert list(state) == list(shadow.state_dict())
    shadow.load_state_dict(state)
    snapped = _model(kind, seed=1)
    snapped.load_state_dict(qat_to_float(qat, snapped))
    with torch.no_grad():
        torch.testing.assert_close(shadow.eval()(x), plain, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(snapped.eval()(x), weights_quantised, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain, weights_quantised, atol=1e-6)


def test_snapped_weights_fold_onto_the_int8_grid():
    model = _model("conv")
    x = torch.randn(16, *model.input_shape)
    qat = prepare_qat(model, x[:1])
    _train_steps(qat, x)
    out = _model("conv")
    out.load_state_dict(qat_to_float(qat, out))
    conv, bn = out.features[0][0], out.features[0][1]
    with torch.no_grad():
        folded = conv.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)
    scale = folded.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    k = folded / scale
    torch.testing.assert_close(k, torch.round(k), atol=1e-3, rtol=0)
    assert k.abs().amax().item() == pytest.approx(127, abs=1e-3)


def test_snap_to_int8_grid():
    w = torch.tensor([[1.0, -0.5, 0.26], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.004]])
    s = snap_to_int8_grid(w)
    torch.testing.assert_close(s[0], torch.tensor([1.0, -64 / 127, 33 / 127]))
    assert torch.equal(s[1], w[1])
    torch.testing.assert_close(s[2], torch.tensor([-2.0, 2 * 64 / 127, 0.0]))


def test_qat_finetune_on_real_features_leaves_a_float_model(esc10_split):
    data, genome, features, train, val, norm = esc10_split
    torch.manual_seed(0)
    model = build_model(genome, data.n_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    r = qat_finetune(model, features, data.labels, train, val, norm,
                     TrainSettings(epochs=2, batch_size=16, learning_rate=1e-3), on_epoch=rows.append)
    assert len(rows) == 2 and 0.0 <= r.val_metrics["accuracy"] <= 1.0 and r.val_probs.shape == (len(val), 10)
    assert list(r.state_dict) == list(before)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    assert type(model).__name__ == "CandidateCNN"
    assert not any(isinstance(m, FakeQuantizeBase) for m in model.modules())


def test_torch_ao_deprecation_is_silenced_only_inside():
    model = _model("conv")
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = prepare_qat(model, torch.zeros(1, *model.input_shape), scheme="x86")
        qat_to_float(qat, model)
    assert not [w for w in caught if "torch.ao.quantization is deprecated" in str(w.message)]
    assert warnings.filters == filters


class _DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_errors_name_the_layer_and_the_value():
    model = _model("conv")
    model.features[1] = _DataDependent()
    with pytest.raises(AscSearchError, match=r"tracing fails in layer features\.1 \(_DataDependent\)"):
        prepare_qat(model, torch.zeros(1, *model.input_shape))
    model = _model("conv")
    with pytest.raises(UserInputError, match=r"example_input must be a float tensor \(batch, C, F, T\), got \(32, 32\)"):
        prepare_qat(model, torch.zeros(32, 32))
    with pytest.raises(UserInputError, match="unknown QAT scheme 'fbgemm'; valid: tflite, x86"):
        prepare_qat(model, torch.zeros(1, *model.input_shape), scheme="fbgemm")
    with pytest.raises(UserInputError, match="must come from prepare_qat"):
        qat_to_float(model, model)
    qat = prepare_qat(model, torch.zeros(1, *model.input_shape))
    with pytest.raises(UserInputError, match="not the same architecture|not prepared from"):
        qat_to_float(qat, _model("ds"))


def test_deterministic_qat_finetune_repeats_exactly_and_restores_the_thread_count(esc10_split):
    from asc_search.trainers import deterministic_torch

    data, genome, features, train, val, norm = esc10_split
    threads = torch.get_num_threads()
    states = []
    for _ in range(2):
        with deterministic_torch(seed=0):
            model = build_model(genome, data.n_classes)
        qat_finetune(model, features, data.labels, train, val, norm, TrainSettings(epochs=1, batch_size=16),
                     deterministic=True)
        assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
        states.append(model.state_dict())
    for k, v in states[0].items():
        torch.testing.assert_close(v, states[1][k], atol=0, rtol=0)
