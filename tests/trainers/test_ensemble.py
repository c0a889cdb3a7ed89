import csv
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asc_search._errors import AscSearchError, UserInputError
from asc_search.constraints import Budget, get_budget
from asc_search.deploy import export_and_validate, export_ensemble, write_npy
from asc_search.rundir import VAL_PROBS_FILE, save_checkpoint
from asc_search.trainers import (
    EnsembleCandidate,
    ensemble_candidates_from_rows,
    full_metrics,
    fuse,
    select_ensemble,
)
from tests.conftest import train_validation_only


def _cand(tid, probs, int8_bytes=10_000, macs=1_000_000, params=None):
    return EnsembleCandidate(trial_id=tid, int8_bytes=int8_bytes, macs=macs, val_probs=np.asarray(probs),
                             params=params)


def _random_probs(rng, n, k):
    return rng.dirichlet(np.full(k, 0.7), size=n)


def _accuracy(y, probs):
    return float(np.mean(np.asarray(probs).argmax(1) == y))


# --- fusion rules ---------------------------------------------------------------------------------------------

def test_prod_rule_equals_hand_computation():
    p1 = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    p2 = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    # Pham et al. 2021, eq. 3: product of the members' probabilities, renormalised over the classes
    row0 = np.array([0.5 * 0.2, 0.3 * 0.5, 0.2 * 0.3])
    row1 = np.array([0.1 * 0.6, 0.1 * 0.3, 0.8 * 0.1])
    np.testing.assert_allclose(fuse([p1, p2], "prod"), [row0 / row0.sum(), row1 / row1.sum()], rtol=1e-12)
    geo0 = np.sqrt(row0)
    np.testing.assert_allclose(fuse([p1, p2], "geometric")[0], geo0 / geo0.sum(), rtol=1e-12)
    np.testing.assert_allclose(fuse([p1, p2], "mean"), (p1 + p2) / 2)
    # PROD of one member is that member; a zero probability is floored, not a NaN
    np.testing.assert_allclose(fuse([p1], "prod"), p1, rtol=1e-9)
    z = fuse([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])], "prod")
    assert np.isfinite(z).all() and z.sum() == pytest.approx(1.0)


def test_fuse_rejects_bad_input():
    with pytest.raises(UserInputError, match="fusion rule"):
        fuse([np.eye(2)], "max")
    with pytest.raises(UserInputError, match="one shape"):
        fuse([np.eye(2), np.eye(3)], "mean")
    with pytest.raises(UserInputError, match="no member"):
        fuse([], "mean")


# --- greedy selection -----------------------------------------------------------------------------------------

def _planted():
    """R: best single model; A: a redundant copy of R (a little worse); B: complementary (worse than A alone)."""
    n, k = 90, 3
    y = np.arange(n) % k
    s3 = np.arange(n) >= 60  # R and A are wrong on the last third, B is right only there
    right = np.full((n, k), 0.15)
    right[np.arange(n), y] = 0.7
    wrong_confident = np.full((n, k), 0.2)
    wrong_confident[np.arange(n), (y + 1) % k] = 0.6
    r = np.where(s3[:, None], wrong_confident, right)
    r[60] = right[60]  # R is right on one more clip than A
    a = np.where(s3[:, None], wrong_confident, right) * 0.98 + 0.02 / k
    b_right = np.full((n, k), 0.025)
    b_right[np.arange(n), y] = 0.95
    b_wrong = np.full((n, k), 0.3)
    b_wrong[np.arange(n), (y + 2) % k] = 0.4
    b = np.where(s3[:, None], b_right, b_wrong)
    return y, {"R": r, "A": a, "B": b}


def test_planted_complementary_candidate_is_selected_over_a_redundant_one():
    y, p = _planted()
    assert _accuracy(y, p["R"]) > _accuracy(y, p["A"]) > _accuracy(y, p["B"])
    cands = [_cand(t, p[t]) for t in ("A", "B", "R")]
    sel = select_ensemble(cands, y, Budget(name="two", max_int8_bytes=20_000), n_bootstrap=50)
    assert sel.members == ("R", "B")
    assert sel.is_ensemble and sel.int8_bytes == 20_000 and sel.macs == 2_000_000
    assert sel.val_metrics["accuracy"] == pytest.approx(1.0)
    assert sel.best_single["trial_id"] == "R"
    assert sel.best_single["val_metrics"]["accuracy"] == pytest.approx(_accuracy(y, p["R"]))
    assert [s["added"] for s in sel.trace] == ["R", "B"]
    row = sel.as_row()
    assert (row["trial_id"], row["int8_bytes"], row["macs"], row["members"]) == ("ensemble", 20_000, 2_000_000,
                                                                                ["R", "B"])
    assert row["best_val_accuracy"] == pytest.approx(1.0) and row["params"] == ""
    assert "budget" in sel.trace[-1]["stopped"]  # A would break the 2-model budget
    # the recorded metrics are those of fuse() over the members with the chosen rule
    fused = fuse([p["R"], p["B"]], sel.fusion)
    assert sel.val_metrics["log_loss"] == pytest.approx(full_metrics(y, fused, class_names=list("012"),
                                                                     n_bootstrap=0)["log_loss"])
    # the fusion rule chosen has the best validation accuracy, then log loss
    best = min(sel.per_fusion.values(), key=lambda r: (-r["accuracy"], r["log_loss"]))
    assert sel.per_fusion[sel.fusion] == best


def test_redundant_candidate_is_never_added_even_with_room():
    y, p = _planted()
    cands = [_cand("R", p["R"]), _cand("A", p["A"])]
    sel = select_ensemble(cands, y, None, n_bootstrap=0)
    assert sel.members == ("R",)
    assert "raises validation accuracy" in sel.trace[-1]["stopped"]


def test_budget_that_fits_one_model_returns_the_best_single_model():
    y, p = _planted()
    cands = [_cand(t, p[t], int8_bytes=60_000, macs=10_000_000) for t in ("A", "B", "R")]
    for budget in (Budget(name="bytes", max_int8_bytes=100_000), Budget(name="macs", max_macs=15_000_000)):
        sel = select_ensemble(cands, y, budget, n_bootstrap=0)
        assert sel.members == ("R",) and not sel.is_ensemble
        assert sel.val_metrics["accuracy"] == sel.best_single["val_metrics"]["accuracy"]
        assert sel.trace[-1]["stopped"] == "no further candidate fits the budget"


def test_max_members_caps_the_ensemble():
    y, p = _planted()
    sel = select_ensemble([_cand(t, p[t]) for t in ("A", "B", "R")], y, None, max_members=1, n_bootstrap=0)
    assert sel.members == ("R",) and "max_members" in sel.reason


def test_empty_and_all_over_budget_candidate_lists_say_why():
    y = np.array([0, 1, 0])
    sel = select_ensemble([], y, get_budget("dcase2022"))
    assert sel.members == () and sel.fusion is None and sel.val_metrics is None
    assert "no candidates" in sel.reason
    big = [_cand("t1", np.eye(2)[y], int8_bytes=200_000), _cand("t2", np.eye(2)[y], macs=31_000_000)]
    sel = select_ensemble(big, y, get_budget("dcase2022"))
    assert sel.members == () and sel.int8_bytes == 0 and sel.best_single is None
    assert "every candidate alone breaks budget 'dcase2022'" in sel.reason
    assert "t1 (int8_bytes 200,000 > 128,000)" in sel.reason and "t2 (macs 31,000,000 > 30,000,000)" in sel.reason
    assert sel.to_dict()["members"] == [] and sel.as_row() == {}


def test_dict_candidates_and_bad_input():
    y = np.array([0, 1, 1])
    ok = {"trial_id": "d", "int8_bytes": 5, "macs": 7, "val_probs": np.eye(2)[y]}
    assert select_ensemble([ok], y, None, n_bootstrap=0).members == ("d",)
    with pytest.raises(UserInputError, match="shape"):
        select_ensemble([ok, {**ok, "trial_id": "e", "val_probs": np.eye(3)[y]}], y, None)
    with pytest.raises(UserInputError, match="unique"):
        select_ensemble([ok, ok], y, None)
    with pytest.raises(UserInputError, match="lacks"):
        select_ensemble([{"trial_id": "x"}], y, None)
    with pytest.raises(UserInputError, match="fusions"):
        select_ensemble([ok], y, None, fusions=("vote",))
    with pytest.raises(UserInputError, match="params"):
        select_ensemble([ok], y, get_budget("cortex-m4"))


_budget_limit = st.one_of(st.none(), st.integers(1, 400))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_cand=st.integers(1, 7), max_bytes=_budget_limit, max_macs=_budget_limit,
       max_params=_budget_limit, max_members=st.one_of(st.none(), st.integers(1, 4)))
def test_ensemble_never_exceeds_the_budget(seed, n_cand, max_bytes, max_macs, max_params, max_members):
    rng = np.random.default_rng(seed)
    n, k = 40, 3
    y = rng.integers(0, k, n)
    cands = [_cand(f"t{i}", _random_probs(rng, n, k), int8_bytes=int(rng.integers(1, 200)),
                   macs=int(rng.integers(1, 200)), params=int(rng.integers(1, 200))) for i in range(n_cand)]
    budget = Budget(name="random", max_int8_bytes=max_bytes, max_macs=max_macs, max_params=max_params)
    sel = select_ensemble(cands, y, budget, max_members=max_members, n_bootstrap=0)
    by_id = {c.trial_id: c for c in cands}
    members = [by_id[m] for m in sel.members]
    assert len(set(sel.members)) == len(sel.members)
    assert sel.int8_bytes == sum(m.int8_bytes for m in members)
    assert sel.macs == sum(m.macs for m in members)
    assert max_bytes is None or sel.int8_bytes <= max_bytes
    assert max_macs is None or sel.macs <= max_macs
    assert max_params is None or sum(m.params for m in members) <= max_params
    assert max_members is None or len(members) <= max_members
    for step in sel.trace:  # every intermediate ensemble fit too
        assert max_bytes is None or step["int8_bytes"] <= max_bytes
        assert max_macs is None or step["macs"] <= max_macs

    def fits(c):
        return ((max_bytes is None or c.int8_bytes <= max_bytes) and (max_macs is None or c.macs <= max_macs)
                and (max_params is None or c.params <= max_params))

    alone = [c for c in cands if fits(c)]
    if not alone:
        assert sel.members == () and "alone breaks" in sel.reason
        return
    # never worse than the best single model that fits, and each greedy step raised the accuracy
    best_single = max(_accuracy(y, c.val_probs) for c in alone)
    assert sel.best_single["val_metrics"]["accuracy"] == pytest.approx(best_single)
    assert sel.val_metrics["accuracy"] >= best_single
    accs = [s["accuracy"] for s in sel.trace]
    assert all(b > a for a, b in zip(accs, accs[1:], strict=False))
    assert sel.val_metrics["accuracy"] == pytest.approx(_accuracy(y, fuse([c.val_probs for c in members],
                                                                          sel.fusion)))


def test_candidates_from_trial_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, status in enumerate(["completed", "completed", "failed", "completed", "completed"]):
        folder = tmp_path / f"ckpt{i}"
        folder.mkdir()
        if i != 1:  # trial 1 has no probabilities file
            np.save(folder / "val_probs.npy", _random_probs(rng, 12, 4 if i != 4 else 3).astype(np.float32))
        rows.append({"trial_id": f"t{i}", "status": status, "int8_bytes": 1000 + i, "macs": 2000 + i,
                     "params": 900 + i, "_checkpoint": str(folder)})
    # the same rows as read back from trials.csv: every value a string
    with open(tmp_path / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(tmp_path / "trials.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    for source in (rows, csv_rows):
        cands = ensemble_candidates_from_rows(source, n_classes=4, probs_file=VAL_PROBS_FILE)
        assert [c.trial_id for c in cands] == ["t0", "t3"]  # t1 lacks probs, t2 failed, t4 has 3 classes
        assert cands[1].int8_bytes == 1003 and cands[1].macs == 2003 and cands[1].params == 903
        assert cands[0].val_probs.shape == (12, 4)


# --- export_ensemble on fake member folders -------------------------------------------------------------------

def _member_folder(run_dir, tid, float_probs, int8_probs, y, *, int8_bytes, macs, arena=20_000, error=None):
    folder = run_dir / "models" / tid
    folder.mkdir(parents=True)
    v = {"trial_id": tid, "file_bytes": int8_bytes + 3000, "int8_bytes_tflite": int8_bytes,
         "params_tflite": int8_bytes - 100, "macs_tflite": macs, "tflm_arena_bytes": arena,
         "latency_ms_litert_xnnpack": 0.5, "latency_ms_litert_builtin": 0.75, "deployable": True}
    if error:
        v = {"trial_id": tid, "error": error, "deployable": False}
    (folder / "validation.json").write_text(json.dumps(v))
    (folder / "model_int8.tflite").write_bytes(b"TFL3")
    (folder / "labels.txt").write_text("dog\ncat\nbird\n")
    write_npy(folder / "val_probs_float.npy", np.asarray(float_probs, np.float32))
    write_npy(folder / "val_probs_int8.npy", np.asarray(int8_probs, np.float32))
    write_npy(folder / "val_labels.npy", y.astype(np.int64))
    return folder


def _fake_run(tmp_path, *, flip_int8=False):
    y, p = _planted()
    q_b = p["B"][:, [1, 2, 0]] if flip_int8 else p["B"] * 0.99 + 0.01 / 3  # INT8: near float, or scrambled
    _member_folder(tmp_path, "R", p["R"], p["R"] * 0.99 + 0.01 / 3, y, int8_bytes=50_000, macs=12_000_000)
    _member_folder(tmp_path, "B", p["B"], q_b, y, int8_bytes=40_000, macs=9_000_000, arena=30_000)
    sel = select_ensemble([_cand("R", p["R"], 50_000, 12_000_000), _cand("B", p["B"], 40_000, 9_000_000)], y,
                          get_budget("dcase2022"), n_bootstrap=0)
    assert sel.members == ("R", "B")
    return y, p, sel


def test_export_ensemble_sums_member_graphs_and_fuses_int8_probabilities(tmp_path):
    y, p, sel = _fake_run(tmp_path)
    v = export_ensemble(tmp_path, sel, get_budget("dcase2022"), n_bootstrap=100)
    out = tmp_path / "models" / "ensemble"
    assert json.loads((out / "validation.json").read_text()) == json.loads(json.dumps(v))
    assert sorted(x.name for x in out.iterdir()) == ["fusion.json", "validation.json"]  # no temporary files left
    assert v["int8_bytes_tflite"] == 90_000 and v["macs_tflite"] == 21_000_000 and v["params_tflite"] == 89_800
    assert v["file_bytes"] == 96_000 and v["tflm_arena_bytes"] == 30_000
    assert v["latency_ms_litert_xnnpack"] == pytest.approx(1.0)
    assert {lim["limit"]: lim["pass"] for lim in v["limits"]} == {"int8_bytes": True, "macs": True,
                                                                   "int8_float_agreement": True}
    assert v["deployable"] is True
    q = [np.load(tmp_path / "models" / m / "val_probs_int8.npy") for m in ("R", "B")]
    fused = fuse(q, sel.fusion)
    assert v["int8"]["accuracy"] == pytest.approx(_accuracy(y, fused))
    assert v["int8"]["log_loss"] == pytest.approx(full_metrics(y, fused, class_names=["a", "b", "c"],
                                                               n_bootstrap=0)["log_loss"])
    assert v["float"]["accuracy"] == pytest.approx(1.0) and v["int8"]["accuracy_ci95"] is not None
    assert list(v["int8"]["per_class_accuracy"]) == ["dog", "cat", "bird"]  # names from the members' labels.txt
    assert v["int8_float_agreement"] == pytest.approx(1.0)
    fusion = json.loads((out / "fusion.json").read_text())
    assert fusion["fusion"] == sel.fusion and fusion["labels"] == ["dog", "cat", "bird"]
    assert [m["tflite"] for m in fusion["members"]] == ["models/R/model_int8.tflite", "models/B/model_int8.tflite"]
    assert "mean over that member's patches" in fusion["how_to_fuse"]["member_clip_probability"]


def test_export_ensemble_fails_limits_it_breaks(tmp_path):
    y, p, sel = _fake_run(tmp_path, flip_int8=True)
    tight = Budget(name="tight", max_int8_bytes=80_000, max_macs=30_000_000, max_peak_ram_bytes=25_000)
    v = export_ensemble(tmp_path, sel.to_dict(), tight, y_val=y, class_names=["x", "y", "z"], n_bootstrap=0,
                        groups=["a", "b"] * 45)
    passed = {lim["limit"]: lim["pass"] for lim in v["limits"]}
    assert passed == {"int8_bytes": False, "macs": True, "tflm_arena_bytes": False, "int8_float_agreement": False}
    assert v["int8_float_agreement"] < 0.95 and v["deployable"] is False
    assert set(v["int8_per_device_accuracy"]) == {"a", "b"}


def test_export_ensemble_says_what_is_missing(tmp_path):
    y, p, sel = _fake_run(tmp_path)
    (tmp_path / "models" / "B" / "val_probs_int8.npy").unlink()
    with pytest.raises(AscSearchError, match=r"models/B/val_probs_int8.npy"):
        export_ensemble(tmp_path, sel, get_budget("dcase2022"))
    with pytest.raises(UserInputError, match="no members"):
        export_ensemble(tmp_path, select_ensemble([], y, None), get_budget("dcase2022"))
    _member_folder(tmp_path, "F", p["A"], p["A"], y, int8_bytes=1, macs=1, error="ExportError: boom")
    with pytest.raises(AscSearchError, match=r"members \['F'\] failed"):
        export_ensemble(tmp_path, {"members": ["F"], "fusion": "mean"}, get_budget("dcase2022"))


def test_write_npy_writes_the_exact_name_atomically(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_npy(tmp_path / "val_probs_float.npy", a)
    assert [x.name for x in tmp_path.iterdir()] == ["val_probs_float.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "val_probs_float.npy"), a)


# --- a real member export (slow) ------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_export_leaves_clip_probabilities_in_validation_order(fsdd, tmp_path):
    """export_and_validate saves the clip probabilities export_ensemble fuses, in the trainer's clip order."""
    import shutil
    from dataclasses import replace

    from asc_search.constraints import patch_layout
    from asc_search.data import decode_dataset, load_manifest
    from asc_search.frontends import FeatureCache
    from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, build_model
    from asc_search.trainers import Normalisation, TrainSettings, fit

    m = train_validation_only(load_manifest(fsdd))
    clips = [c for c in m.clips if int(c.path.stem.rsplit("_", 1)[1]) in (0, 1, 5, 6, 7, 8, 9, 10)]
    data = decode_dataset(replace(m, clips=tuple(clips)), sample_rate_hz=8000)
    g = Genome(frontend=FrontendGenes(sample_rate_hz=8000, n_bins=32, hop_ms=16, chunk_s=0.5, deltas=0),
               arch=ArchSpec(stages=(("conv_c16_k5_relu", "maxpool_k2"), ("conv_c24_k3_tanh", "avgpool_k2"),
                                     ("conv_c32_k3_relu",)), head_width=32))
    cache = FeatureCache(tmp_path / "cache")
    feats, _ = cache.get(data, patch_layout(g))
    train, val = np.flatnonzero(data.is_train), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(feats, train, deltas=0)
    model = build_model(g, data.n_classes)
    res = fit(model, feats, data.labels, train, val, norm, TrainSettings(epochs=8, learning_rate=3e-3,
                                                                                   batch_size=32))
    folder = tmp_path / "run" / "models" / "t0"
    folder.mkdir(parents=True)
    save_checkpoint(folder / "model.pt", genome=g, state_dict=res.state_dict, n_classes=data.n_classes,
                   class_names=list(data.class_names), norm=norm, metrics=res.val_metrics)
    v = export_and_validate(folder / "model.pt", {8000: data}, cache, get_budget("dcase2022"))
    f = np.load(folder / "val_probs_float.npy")
    q = np.load(folder / "val_probs_int8.npy")
    assert f.shape == q.shape == (len(val), data.n_classes) and f.dtype == q.dtype == np.float32
    np.testing.assert_array_equal(np.load(folder / "val_labels.npy"), data.labels[val])
    assert _accuracy(data.labels[val], q) == pytest.approx(v["int8"]["accuracy"])
    assert _accuracy(data.labels[val], f) == pytest.approx(v["float"]["accuracy"])
    # the trainer's clip probabilities (cached float16 features) and the export's are of the same clips in order
    assert np.mean(f.argmax(1) == res.val_probs.argmax(1)) >= 0.9
    assert np.abs(f - res.val_probs).mean() < np.abs(f - np.roll(res.val_probs, 1, axis=0)).mean() / 5

    # two copies of the member: the ensemble counts both, and fusing a model with itself changes no prediction
    shutil.copytree(folder, folder.parent / "t1")
    sel = select_ensemble([_cand("t0", res.val_probs), _cand("t1", res.val_probs)], data.labels[val], None)
    assert sel.members == ("t0",)
    e = export_ensemble(tmp_path / "run", {"members": ["t0", "t1"], "fusion": "prod"}, get_budget("dcase2022"),
                        n_bootstrap=100)
    assert e["int8_bytes_tflite"] == 2 * v["int8_bytes_tflite"] and e["macs_tflite"] == 2 * v["macs_tflite"]
    assert e["int8"]["accuracy"] == pytest.approx(v["int8"]["accuracy"])
    assert e["int8_float_agreement"] == pytest.approx(v["int8_float_agreement"])
