"""Scale: a run's driver and its trials do not hold the data set, and nothing data-set-sized goes through Ray's
object store (issue 15). The same 1-trial search on a TAU22-layout set of 2,000 and of 8,000 one-second clips:
6,000 more clips are 384 MB of decoded float32 audio at 16 kHz, so a process that held the waveforms (or the
object store that carried them) would grow by about that much; the bound is 100 MB. Measured on the 2-core CI
machine (2026-12-03): driver 744 -> 761 MB, largest child 516 -> 540 MB, tree 1,493 -> 1,514 MB (+17, +24, +21 MB)."""

import subprocess
import sys

import pytest

from tests._memory import TreeMemorySampler
from tests.data.tau22_fixture import build_tau22_scale_fixture
from tests.search._cluster_util import env, trials

MB = 1 << 20
GROWTH_LIMIT = 100 * MB  # 4x the measured growth (above), a quarter of what holding the audio would add


def _run(data, out, cache, cwd):
    args = [sys.executable, "-m", "asc_search.cli", "--data", str(data), "--budget", "dcase2022", "--trials", "1",
            "--epochs", "1", "--max-concurrent", "1", "--max-export", "1", "--sampler", "random", "--seed", "0",
            "--out", str(out), "--cache", str(cache)]
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(args, cwd=cwd, env=env(), stdout=log, stderr=subprocess.STDOUT)
        with TreeMemorySampler(proc.pid, interval_s=0.1) as mem:
            rc = proc.wait(timeout=1500)
    assert rc == 0, out.with_suffix(".log").read_text()[-3000:]
    return mem


@pytest.mark.slow
def test_driver_trial_and_object_store_memory_stay_flat_from_2000_to_8000_clips(esc10, tmp_path):
    mems, genomes = {}, {}
    for n in (2000, 8000):
        data = build_tau22_scale_fixture(tmp_path / f"tau22-{n}", esc10, n, sample_rate_hz=16_000)["root"]
        run = tmp_path / f"run-{n}"
        mems[n] = _run(data, run, tmp_path / f"cache-{n}", tmp_path)
        rows = [r for r in trials(run) if r["status"] != "rejected"]  # rejected before training: no memory used
        assert [r["status"] for r in rows] == ["completed"]
        genomes[n] = rows[0]["genome"]
        subprocess.run(["rm", "-rf", str(data)], check=True)
    assert genomes[2000] == genomes[8000]  # the same candidate trained on both: the memory compares like for like
    small, big = mems[2000], mems[8000]
    figures = (f"driver {small.peak_root / MB:.0f} -> {big.peak_root / MB:.0f} MB, largest child "
               f"{small.peak_child / MB:.0f} -> {big.peak_child / MB:.0f} MB, tree {small.peak_tree / MB:.0f} -> "
               f"{big.peak_tree / MB:.0f} MB")
    assert big.peak_root - small.peak_root < GROWTH_LIMIT, figures
    assert big.peak_child - small.peak_child < GROWTH_LIMIT, figures
    assert big.peak_tree - small.peak_tree < 2 * GROWTH_LIMIT, figures
    print(figures)
