"""Every pass/fail line of a budget comes from check_limits: single model, ensemble and bundle
(`asc-search deploy --target`), each limit failing and passing at its boundary."""

import dataclasses
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import yaml

from asc_search import UserInputError
from asc_search.cli import main
from asc_search.constraints import (
    Budget,
    get_budget,
    get_device,
    list_budgets,
    register_budget,
    unregister_budget,
)
from asc_search.deploy import (
    MIN_INT8_AGREEMENT,
    LimitCheck,
    check_limits,
    describe_failures,
    ensemble_measured,
    measured_from_validation,
)
from tests.conftest import train_validation_only

# --- check_limits on measured figures (fast) --------------------------------------------------------------------

PHONE_MACS = 5_000_000
PHONE_MS = get_device("phone").estimate_latency_ms(PHONE_MACS)  # the latency limit exactly at PHONE_MACS
EVERY_LIMIT = Budget(name="every", max_int8_bytes=40_000, max_params=39_000, max_macs=PHONE_MACS,
                     max_peak_ram_bytes=20_000, max_latency_ms=PHONE_MS, device="phone")
AT_LIMIT = {"int8_bytes": 40_000, "params": 39_000, "macs": PHONE_MACS, "tflm_arena_bytes": 20_000,
            "int8_float_agreement": MIN_INT8_AGREEMENT}
ALL_LINES = ["int8_bytes", "params", "macs", "estimated_latency_ms", "tflm_arena_bytes", "int8_float_agreement"]


@pytest.fixture
def register_test_budget():
    """Register budgets for one test and remove them afterwards, also when the test fails."""
    names = []

    def register(budget: Budget) -> Budget:
        register_budget(budget)
        names.append(budget.name)
        return budget

    try:
        yield register
    finally:
        registered = {b.name for b in list_budgets()}
        for name in names:
            if name in registered:
                unregister_budget(name)


def _passed(checks):
    return {c.name: c.passed for c in checks}


def test_every_limit_holds_at_its_boundary():
    checks = check_limits(EVERY_LIMIT, AT_LIMIT)
    assert [c.name for c in checks] == ALL_LINES
    assert all(c.passed for c in checks) and describe_failures(checks) == ""
    latency = checks[3]
    assert latency.measured == pytest.approx(PHONE_MS) and latency.device == "phone" and latency.unit == "ms"
    assert {c.budget for c in checks} == {"every"}


@pytest.mark.parametrize("name, over", [("int8_bytes", 40_001), ("params", 39_001), ("tflm_arena_bytes", 20_001),
                                        ("int8_float_agreement", MIN_INT8_AGREEMENT - 1e-9)])
def test_each_limit_fails_just_past_its_boundary(name, over):
    checks = check_limits(EVERY_LIMIT, {**AT_LIMIT, name: over})
    assert [c.name for c in checks if not c.passed] == [name]


def test_one_mac_too_many_breaks_the_macs_and_the_latency_limit():
    checks = check_limits(EVERY_LIMIT, {**AT_LIMIT, "macs": PHONE_MACS + 1})
    assert [c.name for c in checks if not c.passed] == ["macs", "estimated_latency_ms"]
    latency_only = replace(EVERY_LIMIT, max_macs=None)
    checks = check_limits(latency_only, {**AT_LIMIT, "macs": PHONE_MACS + 1})
    assert [c.name for c in checks if not c.passed] == ["estimated_latency_ms"]


def test_only_the_limits_a_budget_sets_are_checked_and_agreement_always():
    assert [c.name for c in check_limits(get_budget("none"), {"int8_float_agreement": 1.0})] == \
        ["int8_float_agreement"]
    assert [c.name for c in check_limits(get_budget("dcase2022"), AT_LIMIT)] == \
        ["int8_bytes", "macs", "int8_float_agreement"]
    assert [c.name for c in check_limits(get_budget("cortex-m4"), AT_LIMIT)] == \
        ["params", "macs", "tflm_arena_bytes", "int8_float_agreement"]
    assert [c.name for c in check_limits(get_budget("phone"), AT_LIMIT)] == \
        ["estimated_latency_ms", "int8_float_agreement"]


def test_an_unmeasured_figure_fails_its_limit():
    checks = check_limits(EVERY_LIMIT, {"int8_bytes": 1, "params": 1, "int8_float_agreement": 1.0})
    assert _passed(checks) == {"int8_bytes": True, "params": True, "macs": False, "estimated_latency_ms": False,
                               "tflm_arena_bytes": False, "int8_float_agreement": True}
    assert "tflm_arena_bytes unknown (not measured), limit <= 20,000 B (budget every)" in describe_failures(checks)


def test_failures_are_one_line_naming_measured_value_and_limit():
    phone = Budget(name="phone-2ms", max_latency_ms=2.0, device="phone")
    macs = int(get_device("phone").macs_per_s * 3.2 / 1000)  # 3.2 ms
    checks = check_limits(phone, {"macs": macs, "int8_float_agreement": 0.5, "int8_bytes": 1})
    line = describe_failures(checks)
    assert "\n" not in line
    assert line.startswith("estimated_latency_ms 3.2 > 2 ms on phone (budget phone-2ms); ")
    assert line.endswith("int8_float_agreement 0.5 < 0.95 (budget phone-2ms)")
    big = check_limits(Budget(name="b", max_int8_bytes=128_000), {"int8_bytes": np.int64(130_000)})[0]
    assert big.describe() == "int8_bytes 130,000 > 128,000 B (budget b)"


def test_lines_as_validation_json_stores_them_and_back():
    checks = check_limits(EVERY_LIMIT, {**AT_LIMIT, "tflm_arena_bytes": None})
    stored = json.loads(json.dumps([c.to_dict() for c in checks]))
    assert stored[0] == {"limit": "int8_bytes", "value": 40_000, "max": 40_000, "unit": "B", "pass": True}
    assert stored[3]["device"] == "phone" and stored[3]["value"] == round(PHONE_MS, 3)
    assert stored[-1] == {"limit": "int8_float_agreement", "value": MIN_INT8_AGREEMENT, "min": MIN_INT8_AGREEMENT,
                          "unit": "", "pass": True}
    back = [LimitCheck.from_dict(d, budget="every") for d in stored]
    assert [(b.name, b.passed, b.bound) for b in back] == [(c.name, c.passed, c.bound) for c in checks]
    assert describe_failures(back) == describe_failures(checks)
    old = {"limit": "macs", "value": 31_000_000, "max": 30_000_000, "pass": False}  # written before 'unit'
    assert LimitCheck.from_dict(old).describe() == "macs 31,000,000 > 30,000,000 MACs per 1 s"


def test_a_single_models_validation_json_is_checked_on_its_graph_figures():
    v = {"int8_bytes_tflite": 40_000, "int8_bytes_genome": 99, "params_tflite": 39_000, "macs_tflite": PHONE_MACS,
         "macs_genome": 1, "tflm_arena_bytes": 20_000, "int8_float_agreement": MIN_INT8_AGREEMENT}
    assert measured_from_validation(v) == AT_LIMIT
    assert all(c.passed for c in check_limits(EVERY_LIMIT, measured_from_validation(v)))
    checks = check_limits(EVERY_LIMIT, measured_from_validation({**v, "params_tflite": 39_001}))
    assert [c.name for c in checks if not c.passed] == ["params"]


def test_an_ensemble_counts_all_members_and_the_largest_arena():
    members = [{"int8_bytes_tflite": 25_000, "params_tflite": 24_000, "macs_tflite": 3_000_000,
                "tflm_arena_bytes": 20_000},
               {"int8_bytes_tflite": 15_000, "params_tflite": 15_000, "macs_tflite": PHONE_MACS - 3_000_000,
                "tflm_arena_bytes": 12_000}]
    measured = ensemble_measured(members, MIN_INT8_AGREEMENT)
    assert measured == AT_LIMIT  # sums at the limits, the arena the largest member's
    assert all(c.passed for c in check_limits(EVERY_LIMIT, measured))
    members[1]["macs_tflite"] += 1
    members[1]["tflm_arena_bytes"] = 20_001
    assert [c.name for c in check_limits(EVERY_LIMIT, ensemble_measured(members, 1.0)) if not c.passed] == \
        ["macs", "estimated_latency_ms", "tflm_arena_bytes"]
    del members[0]["params_tflite"]  # unknown for one member: unknown for the ensemble
    assert ensemble_measured(members, 1.0)["params"] is None
    assert not _passed(check_limits(EVERY_LIMIT, ensemble_measured(members, 1.0)))["params"]


def test_a_latency_limit_needs_a_device_and_a_positive_value():
    with pytest.raises(UserInputError, match="needs a device"):
        Budget(name="x", max_latency_ms=10.0)
    with pytest.raises(UserInputError, match="max_latency_ms must be > 0"):
        Budget(name="x", max_latency_ms=0.0, device="phone")


def test_unregister_budget_undoes_a_registration(register_test_budget):
    before = [b.name for b in list_budgets()]
    b = register_test_budget(Budget(name="test-undo", max_macs=1))  # the fixture removes it if an assert fails
    assert get_budget("test-undo") is b
    assert unregister_budget("test-undo") is b
    assert [x.name for x in list_budgets()] == before
    with pytest.raises(UserInputError, match="unknown budget 'test-undo'"):
        unregister_budget("test-undo")
    register_test_budget(Budget(name="test-fixture", max_macs=1))
    assert get_budget("test-fixture").max_macs == 1  # removed by the fixture


# --- asc-search deploy --target on a real exported model (slow) -------------------------------------------------

@pytest.fixture(scope="module")
def exported_run(fsdd, tmp_path_factory):
    """A run directory with one exported, deployable model (models/t1) and an ensemble of it and a copy (t2):
    trained 3 epochs on FSDD at 8 kHz, exported and validated by export_and_validate under the 'none' budget."""
    from asc_search.constraints import patch_layout
    from asc_search.data import decode_dataset, load_manifest
    from asc_search.deploy import export_and_validate, export_ensemble
    from asc_search.frontends import FeatureCache
    from asc_search.rundir import save_checkpoint
    from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, build_model
    from asc_search.trainers import Normalisation, TrainSettings, deterministic_torch, fit

    run = tmp_path_factory.mktemp("limits_run")
    m = train_validation_only(load_manifest(fsdd))
    clips = [c for c in m.clips if int(c.path.stem.rsplit("_", 1)[1]) in (0, 1, 5, 6, 7, 8, 9, 10)]
    data = decode_dataset(replace(m, clips=tuple(clips)), sample_rate_hz=8000)
    g = Genome(frontend=FrontendGenes(sample_rate_hz=8000, n_bins=32, hop_ms=16, chunk_s=0.5, deltas=0),
               arch=ArchSpec(stages=(("conv_c16_k5_relu", "maxpool_k2"), ("conv_c24_k3_relu", "avgpool_k2")),
                             head_width=32))
    cache = FeatureCache(run / "cache")
    feats, _ = cache.get(data, patch_layout(g))
    train, val = np.flatnonzero(data.is_train), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(feats, train, deltas=g.frontend.deltas)
    with deterministic_torch(seed=0):  # the same model on any machine, whatever ran before
        model = build_model(g, data.n_classes)
        fit(model, feats, data.labels, train, val, norm, TrainSettings(epochs=3, learning_rate=3e-3, seed=0),
            deterministic=True)
    model_pt = run / "models" / "t1" / "model.pt"
    model_pt.parent.mkdir(parents=True)
    save_checkpoint(model_pt, genome=g, state_dict=model.state_dict(), n_classes=data.n_classes,
                    class_names=list(data.class_names), norm=norm, metrics={})
    budget = get_budget("none")
    v = export_and_validate(model_pt, {8000: data}, cache, budget)
    assert v["deployable"], v["limits"]
    shutil.copytree(run / "models" / "t1", run / "models" / "t2")
    v2 = {**v, "trial_id": "t2"}
    (run / "models" / "t2" / "validation.json").write_text(json.dumps(v2))
    export_ensemble(run, {"members": ["t1", "t2"], "fusion": "mean"}, budget, n_bootstrap=0)
    # config.yaml without run.data: the bundle skips the audio parity check (tested end to end elsewhere)
    (run / "config.yaml").write_text(yaml.safe_dump({"budget": dataclasses.asdict(budget),
                                                     "classes": list(data.class_names)}))
    (run / "trials.csv").write_text("trial_id,status\n")
    return run, v


def _deploy(capsys, run, out, *args):
    rc = main(["deploy", str(run), "--out", str(out), *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err, json.loads((out / "validation.json").read_text())


def _only_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_deploy_target_whose_latency_the_model_breaks_writes_the_bundle_and_exits_2(
        exported_run, register_test_budget, capsys, tmp_path):
    run, v = exported_run
    latency = get_device("phone").estimate_latency_ms(v["macs_tflite"])
    register_test_budget(Budget(name="test-fast-phone", max_latency_ms=latency / 2, device="phone"))
    rc, out, err, b = _deploy(capsys, run, tmp_path / "b", "--pick", "best", "--target", "test-fast-phone")
    assert rc == 2
    line = _only_line(err)
    want = LimitCheck(name="estimated_latency_ms", measured=latency, limit=latency / 2, unit="ms", passed=False,
                      budget="test-fast-phone", device="phone").describe()
    assert "trial t1 breaks --target test-fast-phone: " in line and want in line
    assert f"{latency:.6g} > {latency / 2:.6g} ms on phone" in line
    assert b["target"] == "test-fast-phone" and b["target_pass"] is False
    assert b["target_failures"] == [want]
    assert [(lim["limit"], lim["pass"]) for lim in b["target_limits"]] == \
        [("estimated_latency_ms", False), ("int8_float_agreement", True)]
    assert b["limits"] == v["limits"] and b["deployable"] is True  # the export's own lines (the run's budget)
    assert {"model_int8.tflite", "frontend.tflite", "frontend.json", "labels.txt", "model_data.h", "model_data.cc",
            "README.md"} <= {f.name for f in (tmp_path / "b").iterdir()}
    assert "FAIL: estimated_latency_ms" in (tmp_path / "b" / "README.md").read_text()

    # the latency limit exactly at the model's estimate holds
    register_test_budget(Budget(name="test-exact-phone", max_latency_ms=latency, device="phone"))
    rc, out, err, b = _deploy(capsys, run, tmp_path / "exact", "--pick", "t1", "--target", "test-exact-phone")
    assert rc == 0, err
    assert b["target_pass"] is True and b["target_failures"] == [] and "target test-exact-phone passed" in out


@pytest.mark.slow
def test_deploy_target_cortex_m4_checks_parameters_and_the_arena(exported_run, register_test_budget, capsys,
                                                                 tmp_path):
    run, v = exported_run
    rc, out, err, b = _deploy(capsys, run, tmp_path / "m4", "--pick", "best", "--target", "cortex-m4")
    lines = {lim["limit"]: lim for lim in b["target_limits"]}
    assert list(lines) == ["params", "macs", "tflm_arena_bytes", "int8_float_agreement"]
    assert lines["params"]["value"] == v["params_tflite"] and lines["params"]["max"] == 128_000
    assert lines["tflm_arena_bytes"]["value"] == v["tflm_arena_bytes"] > 0
    assert lines["tflm_arena_bytes"]["max"] == 131_072
    assert b["target_pass"] is all(lim["pass"] for lim in b["target_limits"])
    assert rc == (0 if b["target_pass"] else 2)

    # a microcontroller one parameter and one arena byte too small: both named, with their values and limits
    register_test_budget(replace(get_budget("cortex-m4"), name="test-tiny-mcu", max_params=v["params_tflite"] - 1,
                                 max_peak_ram_bytes=v["tflm_arena_bytes"] - 1))
    rc, out, err, b = _deploy(capsys, run, tmp_path / "tiny", "--pick", "best", "--target", "test-tiny-mcu")
    assert rc == 2
    line = _only_line(err)
    assert f"params {v['params_tflite']:,} > {v['params_tflite'] - 1:,} (budget test-tiny-mcu)" in line
    assert f"tflm_arena_bytes {v['tflm_arena_bytes']:,} > {v['tflm_arena_bytes'] - 1:,} B" in line
    assert b["target_pass"] is False
    assert [f.split(" ")[0] for f in b["target_failures"]] == ["params", "tflm_arena_bytes"]


@pytest.mark.slow
def test_deploy_pick_ensemble_bundles_the_members_and_checks_their_sum(exported_run, register_test_budget, capsys,
                                                                       tmp_path):
    run, v = exported_run
    # one member fits, the two together break the parameter limit
    register_test_budget(Budget(name="test-one-member", max_params=v["params_tflite"] + 1))
    rc, out, err, b = _deploy(capsys, run, tmp_path / "ens", "--pick", "ensemble", "--target", "test-one-member")
    assert rc == 2
    line = _only_line(err)
    assert "the ensemble (t1 + t2) breaks --target test-one-member" in line
    assert f"params {2 * v['params_tflite']:,} > {v['params_tflite'] + 1:,}" in line
    assert b["target_pass"] is False and b["members"] == ["t1", "t2"]
    fusion = json.loads((tmp_path / "ens" / "fusion.json").read_text())
    assert fusion["fusion"] == "mean" and [m["tflite"] for m in fusion["members"]] == \
        ["t1/model_int8.tflite", "t2/model_int8.tflite"]
    for m in ("t1", "t2"):
        assert (tmp_path / "ens" / m / "frontend.tflite").is_file()
        assert (tmp_path / "ens" / m / "model_int8.tflite").read_bytes() == \
            (run / "models" / m / "model_int8.tflite").read_bytes()
    assert b["latency_ms_end_to_end"] == pytest.approx(
        sum(x["latency_ms_end_to_end"] for x in b["member_bundles"].values()), abs=1e-3)
