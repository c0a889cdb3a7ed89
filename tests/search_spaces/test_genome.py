import dataclasses
import subprocess
import sys

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asc_search import UserInputError
from asc_search.constraints import count_complexity, get_budget
from asc_search.search_spaces import (
    ACTIVATIONS,
    AUGMENTATIONS,
    ArchSpec,
    FrontendGenes,
    Genome,
    SpaceOptions,
    TrainingGenes,
    decode_block,
    genome_from_params,
    sample_genome,
)


def _sampled(n=20, seed=0, options=None):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append((sample_genome(t, options or SpaceOptions()), t.params))
        study.tell(t, 0.0)
    return out


def test_sampled_genomes_round_trip_through_json_and_params():
    seen_kinds = set()
    for g, params in _sampled(60):
        assert Genome.decode(g.encode()) == g and Genome.from_json(g.to_json()) == g
        assert genome_from_params(params) == g
        assert 2 <= len(g.arch.stages) <= 4
        seen_kinds |= {decode_block(b).kind for stage in g.arch.stages for b in stage}
    assert seen_kinds >= {"conv", "dc", "ds", "ir", "freq", "freqatt", "maxpool", "avgpool"}


_odd = st.sampled_from([1, 3, 5, 7])
_pair = st.tuples(st.integers(1, 3), st.integers(1, 3))
_act = st.sampled_from(ACTIVATIONS)
_width = st.integers(1, 16).map(lambda k: 4 * k)
_block = st.one_of(
    st.builds(lambda c, k, s, a, r: f"conv_c{c}_k{k[0]}x{k[1]}_s{s[0]}x{s[1]}_r{r}_{a}", _width,
              st.tuples(_odd, _odd), _pair, _act, st.integers(1, 3)),
    st.builds(lambda c, k, s, a: f"dc_c{c}_k{k}_s{s[0]}x{s[1]}_{a}", _width, _odd, _pair, _act),
    st.builds(lambda c, k, s, a: f"ds_c{c}_k{k}_s{s[0]}x{s[1]}_{a}", _width, _odd, _pair, _act),
    st.builds(lambda c, k, e, a: f"ir_c{c}_k{k}_e{e}_{a}", _width, _odd, st.integers(1, 6), _act),
    st.builds(lambda kind, c, k, n, a: f"{kind}_c{c}_k{k}_n{n}_{a}", st.sampled_from(["freq", "freqatt"]), _width,
              _odd, st.integers(1, 8), _act),
    st.builds(lambda kind, k: f"{kind}_k{k[0]}x{k[1]}", st.sampled_from(["maxpool", "avgpool"]), _pair),
)
_arch = st.builds(
    lambda stages, wm, dm, head, hw, ha, p: ArchSpec(stages=stages, width_multiplier=wm, depth_multiplier=dm,
                                                     head=head, head_width=hw, head_activation=ha, dropout=p),
    st.lists(st.lists(_block, min_size=1, max_size=3).map(tuple), min_size=1, max_size=4).map(tuple),
    st.sampled_from([0.25, 0.5, 0.75, 1.0, 1.5]), st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from(["gap", "flatten"]),
    st.sampled_from([0, 16, 100]), _act, st.floats(0, 0.9))
_teacher = st.one_of(st.just(("none", 0)), st.just(("basd", 0)), st.just(("ensemble", 0)),
                     st.just(("cssd", 48000)))
_training = st.builds(
    lambda augs, sap, wd, warm, sched, teacher, a, t, qat: TrainingGenes(
        augmentations=augs, sapaugment=sap and bool(augs), weight_decay=wd, warmup_epochs=warm, schedule=sched,
        kd_teacher=teacher[0], kd_teacher_rate_hz=teacher[1], kd_alpha=a, kd_temperature=t, qat=qat),
    st.lists(st.sampled_from(AUGMENTATIONS), unique=True, max_size=4).map(tuple), st.booleans(),
    st.sampled_from([0.0, 1e-4, 1e-3]), st.integers(0, 3), st.sampled_from(["cosine", "constant"]), _teacher,
    st.floats(0, 1), st.floats(0.5, 8), st.booleans())
_genome = st.builds(
    lambda kind, sr, bins, hop, chunk, d, arch, lr, training: Genome(
        frontend=FrontendGenes(kind=kind, sample_rate_hz=sr, n_bins=bins, hop_ms=hop, chunk_s=chunk, deltas=d),
        arch=arch, learning_rate=lr, training=training),
    st.sampled_from(["logmel", "gammatone", "cqt"]), st.sampled_from([8000, 16000, 44100]),
    st.sampled_from([32, 40, 64]), st.sampled_from([10.0, 20.0]), st.sampled_from([0.5, 1.0]),
    st.integers(0, 2), _arch, st.floats(1e-5, 1e-1), _training)


@settings(max_examples=300, deadline=None)
@given(_genome)
def test_decode_of_encode_is_the_identity(g):
    assert Genome.decode(g.encode()) == g
    assert Genome.decode(g.encode()).genome_id == g.genome_id
    for stage in g.arch.stages:
        for b in stage:
            assert decode_block(b).encode() == b
    c = count_complexity(g, n_classes=10)  # counting never raises; it says why a genome cannot be built
    assert c.buildable or c.reason


def test_equal_networks_written_differently_are_one_genome():
    a = ArchSpec(stages=(("conv_c16_k3x3_s1x1_r1_relu",),))
    b = ArchSpec(stages=(("conv_relu_k3_c16",),))
    assert a == b and a.arch_id == b.arch_id and a.stages == (("conv_c16_k3_relu",),)


def test_ids_are_stable_across_processes():
    g, _ = _sampled(1, seed=3)[0]
    code = ("from asc_search.search_spaces import Genome; "
            f"g = Genome.decode({g.encode()!r}); print(g.genome_id, g.arch_id)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert other == [g.genome_id, g.arch_id] and len(other[0]) == 12


def test_width_and_depth_multipliers():
    arch = ArchSpec(stages=(("conv_c32_k3_s2_r2_relu", "maxpool_k2"),), width_multiplier=0.5, depth_multiplier=1.5)
    layers = arch.layers()
    assert [b.encode() for b in layers] == ["conv_c16_k3_s2_relu", "conv_c16_k3_relu", "conv_c16_k3_relu",
                                            "maxpool_k2"]
    assert arch.depth == 4


def test_bad_genes_are_rejected_with_the_value():
    with pytest.raises(UserInputError, match="head must be one of .*got 'mlp'"):
        ArchSpec(stages=(("conv_c8_k3_relu",),), head="mlp")
    with pytest.raises(UserInputError, match="width_multiplier must be in \\(0, 4\\], got 0"):
        ArchSpec(stages=(("conv_c8_k3_relu",),), width_multiplier=0)
    with pytest.raises(UserInputError, match="no empty stage"):
        ArchSpec(stages=((),))
    with pytest.raises(UserInputError, match="dropout must be in \\[0, 1\\), got 1.0"):
        ArchSpec(stages=(("conv_c8_k3_relu",),), dropout=1.0)
    with pytest.raises(UserInputError, match="unknown block type\\(s\\) \\['mlp'\\]"):
        SpaceOptions(block_types=("conv", "mlp"))
    with pytest.raises(UserInputError, match="widths must be multiples of 4, got \\[10\\]"):
        SpaceOptions(widths=(10,))


def test_a_stride_that_shrinks_the_map_below_1x1_is_infeasible_before_training():
    g = Genome(frontend=FrontendGenes(sample_rate_hz=16000, n_bins=32, hop_ms=32, chunk_s=0.5),
               arch=ArchSpec(stages=(("conv_c8_k3_s4_relu", "maxpool_k4"), ("conv_c8_k3_s4_relu", "maxpool_k2"))))
    c = count_complexity(g, n_classes=10)
    assert not c.buildable
    assert c.reason == "block 4 (maxpool_k2) on input 8x1x1: maxpool_k2 shrinks the 1x1 map below 1x1"
    assert c.reason in get_budget("dcase2022").check(c)
    assert get_budget("dcase2022").violations(c)["buildable"] > 0
    with pytest.raises(UserInputError, match="cannot build .*block 4 \\(maxpool_k2\\)"):
        from asc_search.search_spaces import build_model

        build_model(g, 10)


def test_the_first_stage_never_gets_a_decomposed_conv():
    for g, _ in _sampled(80, seed=1):
        assert not g.arch.stages[0][0].startswith("dc_")



def test_the_define_by_run_space_builds_no_model(monkeypatch):
    """Sampling and counting stay pure and cheap: no torch module is constructed, and constraints are set."""
    import torch

    from asc_search.search import DefineByRunSpace

    def refuse(*args, **kwargs):
        raise AssertionError("the space built a torch module")

    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
    space = DefineByRunSpace(options=SpaceOptions(), budget=get_budget("cortex-m4"), n_classes=10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(100):
        t = study.ask()
        space(t)
        study.tell(t, 0.0)
    assert {"buildable", "params", "macs", "peak_ram"} <= set(study.trials[-1].constraints)


def test_plain_training_genes_leave_the_encoding_unchanged():
    g = _sampled(1)[0][0]
    assert "training" not in g.to_dict()
    trained = dataclasses.replace(g, training=TrainingGenes(augmentations=("mixup",), qat=True))
    assert trained.to_dict()["training"] == {"augmentations": ["mixup"], "qat": True}
    assert trained.genome_id != g.genome_id and trained.arch_id == g.arch_id
    assert "mixup" in trained.summary() and "qat" in trained.summary()


@pytest.mark.parametrize(("genes", "message"), [
    ({"kd_teacher": "basd", "kd_alpha": 1.5}, r"kd_alpha must be in \[0, 1\].*got 1.5"),
    ({"kd_teacher": "basd", "kd_alpha": -0.1}, r"kd_alpha must be in \[0, 1\].*got -0.1"),
    ({"kd_teacher": "basd", "kd_temperature": 0.0}, r"kd_temperature must be > 0, got 0.0"),
    ({"kd_teacher": "cssd"}, r"needs kd_teacher_rate_hz > 0"),
    ({"prune_ratios": (0.5, 1.0)}, r"prune ratio of stage 2 is 1.0; it must be in \[0, 1\)"),
    ({"augmentations": ("mixup", "rotate")}, r"from mixup, specaugment, cutmix, freq_mixstyle"),
    ({"sapaugment": True}, r"no augmentation is on"),
    ({"kd_teacher": "teacherless"}, r"kd_teacher must be one of none, basd, cssd, ensemble"),
])
def test_bad_training_genes_are_rejected_with_the_value_and_range(genes, message):
    with pytest.raises(UserInputError, match=message):
        TrainingGenes(**genes)


def test_a_cssd_teacher_below_the_student_rate_is_rejected():
    g = _sampled(1)[0][0]  # 16 kHz student
    with pytest.raises(UserInputError, match="teacher's sample rate 8000 Hz is below the student's 16000 Hz"):
        dataclasses.replace(g, training=TrainingGenes(kd_teacher="cssd", kd_teacher_rate_hz=8000))
    ok = dataclasses.replace(g, training=TrainingGenes(kd_teacher="cssd", kd_teacher_rate_hz=16000))
    assert Genome.decode(ok.encode()) == ok


def test_the_space_samples_training_genes_only_when_the_run_offers_them():
    plain = [g for g, _ in _sampled(10)]
    assert all(g.training == TrainingGenes() for g in plain)
    options = SpaceOptions(augmentations=("mixup", "specaugment"), sapaugment=(False, True),
                           kd_teachers=("none", "basd"), kd_alphas=(0.3, 0.7), qat=(False, True))
    genomes = [g for g, _ in _sampled(40, options=options)]
    assert any(g.training.augmentations for g in genomes) and any(not g.training.augmentations for g in genomes)
    assert {g.training.kd_teacher for g in genomes} == {"none", "basd"}
    assert {g.training.qat for g in genomes} == {False, True}
    assert all(g.training.kd_alpha in (0.3, 0.7) for g in genomes if g.training.kd_teacher == "basd")


def test_the_trial_parameters_alone_rebuild_a_genome_with_training_genes():
    options = SpaceOptions(sample_rates_hz=(8000,), kd_teachers=("cssd",), kd_teacher_rate_hz=16000,
                           weight_decays=(1e-3,), prune_ratios=(0.5,), qat=(True,), epochs=(5, 10), batch_sizes=(32,))
    genomes = []
    for g, params in _sampled(10, options=options):
        assert genome_from_params(params) == g
        assert g.training.kd_teacher_rate_hz == 16000 and g.training.weight_decay == 1e-3 and g.training.qat
        assert g.training.batch_size == 32
        genomes.append(g)
    assert {g.training.epochs for g in genomes} == {5, 10}
