"""The run directory's schema: checkpoints, trials.csv rows and types, and reading a run back."""

import json
import pickle

import numpy as np
import pytest
import torch
import yaml

from asc_search._errors import AscSearchError, UserInputError
from asc_search.constraints import count_complexity, get_budget
from asc_search.rundir import (
    CONFIG_FILE,
    MODEL_FILE,
    TRIAL_COLUMNS,
    TRIALS_FILE,
    blank_row,
    candidate_row,
    copy_checkpoint,
    load_checkpoint,
    load_run,
    read_trials,
    rejected_rows,
    rows_from_tune,
    save_checkpoint,
    write_trials,
)
from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome, build_model
from asc_search.trainers import Normalisation

GENOME = Genome(frontend=FrontendGenes(sample_rate_hz=8000, n_bins=32, hop_ms=16, chunk_s=0.5, deltas=0),
                arch=ArchSpec(stages=(("conv_c8_k3_relu", "maxpool_k2"), ("conv_c16_k3_relu",)), head_width=16))
NORM = Normalisation(deltas=0, mean_db=(-40.0,), std_db=(12.0,))


def _saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(GENOME, 4).eval()
    path = tmp_path / MODEL_FILE
    save_checkpoint(path, genome=GENOME, state_dict=model.state_dict(), n_classes=4, class_names=list("abcd"),
                    norm=NORM, metrics={"final": True, "best_val_accuracy": np.float32(0.5)})
    return model, path


def test_a_checkpoint_rebuilds_the_same_network(tmp_path):
    model, path = _saved(tmp_path)
    ckpt = load_checkpoint(path)
    assert ckpt.genome == GENOME and ckpt.n_classes == 4 and ckpt.class_names == list("abcd")
    assert ckpt.normalisation == NORM and ckpt.sample_rate_hz == 8000
    assert ckpt.metrics == {"final": True, "best_val_accuracy": 0.5}  # numpy scalars stored as plain numbers
    x = torch.randn(3, 1, 32, 31)
    rebuilt = ckpt.build_model()
    assert not rebuilt.training
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


class _Payload:
    """Any class: a pickle that needs it is not plain data."""


def test_a_checkpoint_that_needs_code_to_load_is_refused(tmp_path):
    torch.save({"state_dict": {}, "metrics": _Payload()}, tmp_path / "code.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(tmp_path / "code.pt")


def test_copy_checkpoint_copies_weights_and_history_and_names_a_missing_one(tmp_path):
    _, path = _saved(tmp_path)
    (tmp_path / "history.json").write_text("[]")
    out = copy_checkpoint({"trial_id": "t1", "_checkpoint": str(tmp_path)}, tmp_path / "models" / "t1")
    assert out.read_bytes() == path.read_bytes()
    assert (out.parent / "history.json").read_text() == "[]"
    assert not list(out.parent.glob(".*.tmp"))
    with pytest.raises(AscSearchError, match="trial t2 has no checkpoint"):
        copy_checkpoint({"trial_id": "t2", "_checkpoint": None}, tmp_path / "models" / "t2")


def _rows():
    done = candidate_row(trial_id="a0001", status="completed", genome=GENOME, n_classes=4,
                         metrics={"best_val_accuracy": 0.75, "best_val_log_loss": 0.9, "best_val_uar": 0.7,
                                  "best_epoch": 3, "epoch": 4, "val_per_device_accuracy": {"a": 0.75}},
                         finished_at=1.5)
    failed = candidate_row(trial_id="a0002", status="completed", genome=GENOME, n_classes=4,
                           metrics={"failed": True, "error": "NaN/inf loss: x", "best_val_accuracy": 0.0})
    return [done, failed]


def test_rows_have_every_column_and_failures_lose_placeholder_metrics():
    done, failed = _rows()
    assert set(done) == {*TRIAL_COLUMNS, "_checkpoint"} and set(blank_row()) == set(TRIAL_COLUMNS)
    c = count_complexity(GENOME, n_classes=4)
    assert (done["macs"], done["params"], done["int8_bytes"]) == (c.macs, c.params, c.int8_bytes)
    assert failed["status"] == "failed" and failed["best_val_accuracy"] == "" and failed["error"].startswith("NaN")


def test_trials_csv_round_trips_with_types(tmp_path):
    rows = _rows()
    write_trials(tmp_path, rows)
    header = (tmp_path / TRIALS_FILE).read_text().splitlines()[0]
    assert header == ",".join(TRIAL_COLUMNS)
    back = {r["trial_id"]: r for r in read_trials(tmp_path / TRIALS_FILE)}
    assert back["a0001"]["best_val_accuracy"] == 0.75 and back["a0001"]["macs"] == rows[0]["macs"]
    assert isinstance(back["a0001"]["macs"], int) and back["a0001"]["on_front"] is False
    assert back["a0002"]["best_val_accuracy"] == ""
    assert json.loads(back["a0001"]["per_device_accuracy"]) == {"a": 0.75}


def test_rejected_rows_come_from_rejected_jsonl(tmp_path):
    path = tmp_path / "rejected.jsonl"
    assert rejected_rows(path, 4) == []
    path.write_text(json.dumps({"trial_id": "rejected_00000", "genome": GENOME.to_dict(),
                                "reasons": ["int8_bytes 9 > 8", "macs 2 > 1"], "time": 3.0}) + "\n")
    (row,) = rejected_rows(path, 4)
    assert row["status"] == "rejected" and row["reasons"] == "int8_bytes 9 > 8; macs 2 > 1"
    assert row["epochs_run"] == 0 and row["per_device_accuracy"] == ""


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(yaml.safe_dump({"run": {}, "budget": get_budget("dcase2022").__dict__,
                                                   "classes": list("abcd")}))
    return run


def test_an_interrupted_run_is_read_from_tunes_trial_folders(tmp_path):
    run = _run_dir(tmp_path)
    for tid, result in (("a0001", {"final": True, "best_val_accuracy": 0.5, "trial_id": "a0001"}),
                        ("a0002", {"final": False, "best_val_accuracy": 0.25, "trial_id": "a0002"})):
        folder = run / "tune" / f"trial_{tid}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({"genome": GENOME.to_dict()}))
        (folder / "result.json").write_text(json.dumps(result) + "\n")
    rows = {r["trial_id"]: r for r in rows_from_tune(run, 4)}
    assert rows["a0001"]["status"] == "completed"
    assert rows["a0002"]["status"] == "stopped" and rows["a0002"]["stop_reason"] == "interrupted"
    loaded = load_run(run)
    assert loaded.interrupted and [r["trial_id"] for r in loaded.front] == ["a0001"]
    assert loaded.budget == get_budget("dcase2022")


def test_load_run_names_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UserInputError, match="is not an asc-search run directory \\(no config.yaml\\)"):
        load_run(tmp_path)


def test_a_new_run_may_go_into_a_new_an_empty_or_an_unfinished_folder(tmp_path):
    """What ``check_new_run_dir`` lets through: a path not made yet, an empty folder, and one holding only what a
    run writes before its search starts (a run that stopped during data preparation)."""
    from asc_search.rundir import check_new_run_dir

    assert check_new_run_dir(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    (tmp_path / "empty").mkdir()
    assert check_new_run_dir(tmp_path / "empty") == (tmp_path / "empty").resolve()
    early = tmp_path / "early"
    (early / "cache").mkdir(parents=True)
    (early / "config.yaml").write_text("run: {}\n")
    (early / "data_report.json").write_text("{}")
    assert check_new_run_dir(early) == early.resolve()
