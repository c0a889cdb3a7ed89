"""`asc-search validate` on any labelled audio, and the run's own split in the bundle's parity check and in
`validate --split validation` (issue 17): a run with `--seed 3` on a folder-per-class layout, whose stratified
split differs from the default seed's."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from asc_search.data import load_manifest

pytestmark = pytest.mark.slow

PER_CLASS = 12  # 10 digits x 12 clips: a 2-minute search of 1 trial on this machine


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "asc_search.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1200)


@pytest.fixture(scope="module")
def seed3_bundle(fsdd, tmp_path_factory):
    """Digits as a folder per class (links to ../shared/data/fsdd), searched with --seed 3, the best model
    deployed as a bundle."""
    root = tmp_path_factory.mktemp("validate")
    digits = root / "digits"
    with open(fsdd / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    for label in sorted({r["label"] for r in rows}):
        (digits / label).mkdir(parents=True)
        for r in [r for r in rows if r["label"] == label][:PER_CLASS]:
            (digits / label / Path(r["filename"]).name).symlink_to(fsdd / r["filename"])
    run = root / "run"
    p = _run(["--budget", "dcase2022", "--data", str(digits), "--trials", "1", "--epochs", "2", "--seed", "3",
              "--sampler", "random", "--sample-rates-hz", "8000", "--max-export", "1", "--no-ensemble",
              "--out", str(run)], cwd=root)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    p = _run(["deploy", str(run), "--pick", "best", "--out", str(root / "bundle")], cwd=root)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return root, digits, run, root / "bundle", rows


def _metrics(stdout: str) -> dict:
    m = re.search(r"accuracy ([0-9.]+)\s+log loss ([0-9.]+)\s+UAR ([0-9.]+)", stdout)
    assert m and "confusion matrix (rows: true, columns: predicted)" in stdout, stdout
    clips = int(re.search(r"asc-search: (\d+) clips", stdout).group(1))
    return {"accuracy": float(m.group(1)), "log_loss": float(m.group(2)), "uar": float(m.group(3)), "clips": clips}


def test_the_bundle_and_validate_use_the_runs_seed(seed3_bundle):
    root, digits, run, bundle, _ = seed3_bundle
    seed3 = {c.path for c in load_manifest(digits, seed=3).clips if c.is_validation}
    seed0 = {c.path for c in load_manifest(digits, seed=0).clips if c.is_validation}
    assert seed3 != seed0  # the test can tell the run's split from the default one
    assert json.loads((bundle / "split.json").read_text()) == {"data": str(digits), "val_fold": None, "test_fold": None, "seed": 3}
    b = json.loads((bundle / "validation.json").read_text())
    assert b["bundle_metrics"]["clips"] == len(seed3) and "seed 3" in b["bundle_metrics"]["split_rule"]  # parity
    p = _run(["validate", str(bundle), "--data", str(digits), "--split", "validation"], cwd=root)
    assert p.returncode == 0, p.stderr
    got = _metrics(p.stdout)
    assert "seed 3" in p.stdout and got["clips"] == len(seed3)
    assert got["accuracy"] == pytest.approx(b["bundle_metrics"]["accuracy"], abs=5e-5)  # parity ran on that split
    # the exported model folder of the run: the split comes from the run's config.yaml
    model = run / "models" / b["trial_id"]
    p = _run(["validate", str(model), "--data", str(digits), "--split", "validation"], cwd=root)
    assert p.returncode == 0 and "seed 3" in p.stdout, p.stdout + p.stderr
    v = json.loads((model / "validation.json").read_text())
    assert _metrics(p.stdout)["accuracy"] == pytest.approx(v["int8"]["accuracy"], abs=5e-5)
    p = _run(["validate", str(bundle), "--data", str(digits), "--split", "validation", "--seed", "0"], cwd=root)
    assert p.returncode == 0 and "seed 0" in p.stdout and _metrics(p.stdout)["clips"] == len(seed0)


def test_validate_scores_a_csv_of_test_rows_and_a_folder_per_class_whole(seed3_bundle, fsdd):
    root, digits, _, bundle, rows = seed3_bundle
    test_rows = [r for r in rows if r["split"] == "test"]
    picked = [next(r for r in test_rows if r["label"] == lab)["filename"] for lab in sorted({r["label"] for r in rows})]
    csv_path = root / "new_recordings.csv"
    with open(csv_path, "w", newline="") as f:  # every row test: a search would refuse it, validate scores it
        w = csv.writer(f)
        w.writerow(["filename", "label", "split"])
        w.writerows([str(fsdd / name), name.split("/")[-1].split("_")[0], "test"] for name in picked)
    p = _run(["validate", str(bundle), "--data", str(csv_path)], cwd=root)
    assert p.returncode == 0, p.stderr
    assert _metrics(p.stdout)["clips"] == len(picked) == 10
    matrix = p.stdout.split("confusion matrix (rows: true, columns: predicted)")[1].strip().splitlines()
    assert len(matrix) == 10 and sum(int(n) for line in matrix for n in line.split()[1:]) == 10
    p = _run(["validate", str(bundle), "--data", str(digits)], cwd=root)  # a folder per class, every clip
    assert p.returncode == 0, p.stderr
    assert _metrics(p.stdout)["clips"] == 10 * PER_CLASS
