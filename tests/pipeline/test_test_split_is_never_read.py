"""The test split is never read by the search or the selection: a planted test clip whose label is flipped changes
no search result (trials, Pareto front, knee, ensemble, ``deploy --pick best``), only the test figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import write_subset_manifest
from tests.test_end_to_end import _run

pytestmark = pytest.mark.slow

SEARCH_COLUMNS = ("genome_id", "status", "best_val_accuracy", "best_val_log_loss", "best_val_uar", "best_epoch",
                  "macs", "int8_bytes", "on_front", "per_class_accuracy", "per_device_accuracy", "reasons")


def _search(data: Path, out: Path, cwd: Path) -> dict:
    p = _run(["--budget", "dcase2022", "--max-macs", "4000000", "--max-int8-bytes", "40000", "--data", str(data),
              "--trials", "3", "--epochs", "2", "--sampler", "random", "--seed", "4", "--out", str(out),
              "--max-export", "2", "--chunks-s", "1"], cwd=cwd)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "trials.csv")))
    genome_of = {r["trial_id"]: r["genome_id"] or r["trial_id"] for r in rows}
    pareto = json.loads((out / "pareto.json").read_text())
    p = _run(["deploy", str(out), "--pick", "best", "--out", str(out / "bundle")], cwd=cwd)
    picked = json.loads((out / "bundle" / "validation.json").read_text())["trial_id"] if p.returncode == 0 else None
    ensemble = out / "models" / "ensemble" / "validation.json"
    ens = json.loads(ensemble.read_text()) if ensemble.exists() else {}
    exported = {genome_of[v.parent.name]: json.loads(v.read_text()) for v in (out / "models").glob("*/validation.json")
                if v.parent.name != "ensemble"}
    return {
        "trials": sorted(tuple(r.get(c, "") for c in SEARCH_COLUMNS) for r in rows if r["trial_id"] != "ensemble"),
        "front": sorted(genome_of[f["trial_id"]] for f in pareto["front"]),
        "knee": genome_of.get(pareto["knee_trial_id"]),
        "ensemble": (sorted(genome_of[m] for m in ens.get("members", [])), ens.get("fusion"),
                     (ens.get("selection") or {}).get("val_metrics")),
        "pick": genome_of.get(picked),
        "exported_validation": {g: (v["int8"], v["float"]) for g, v in exported.items()},
        "test": {g: v["test"]["int8"] for g, v in exported.items()},
    }


def test_a_flipped_test_label_changes_no_search_result(esc10, tmp_path):
    clean = write_subset_manifest(esc10, tmp_path / "clean" / "metadata.csv", per_class_per_group=3,
                                  columns=("filename", "label", "fold"), group_column="fold")
    rows = list(csv.DictReader(open(clean)))
    planted = next(i for i, r in enumerate(rows) if r["fold"] == "3")  # fold 3: the test split
    labels = sorted({r["label"] for r in rows})
    flipped = [dict(r) for r in rows]
    flipped[planted]["label"] = next(lab for lab in labels if lab != rows[planted]["label"])
    dirty = tmp_path / "flipped" / "metadata.csv"
    dirty.parent.mkdir()
    with open(dirty, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(flipped)

    a = _search(clean.parent, tmp_path / "run-clean", tmp_path)
    b = _search(dirty.parent, tmp_path / "run-flipped", tmp_path)
    assert a["trials"] and a["front"] and a["pick"] is not None
    for key in ("trials", "front", "knee", "ensemble", "pick", "exported_validation"):
        assert a[key] == b[key], key
    # the test split is read once, by the export: the flipped label shows there (the clip now counts against it)
    assert set(a["test"]) == set(b["test"])
    assert all(a["test"][g]["log_loss"] != b["test"][g]["log_loss"] for g in a["test"])
