"""Fast checks of the cluster options: fault injection format, config round trip, device choice, GPU requests."""

from pathlib import Path

import pytest

from asc_search._errors import UserInputError
from asc_search.config import RunConfig
from asc_search.search import parse_faults
from asc_search.trainers import training_device
from tests.search._cluster_util import SMALL_SEARCH, cli, small_esc10


def test_parse_faults_reads_index_fault_pairs_and_rejects_the_rest():
    assert parse_faults("2:raise, 3:nan,4:oom") == {2: "raise", 3: "nan", 4: "oom"}
    assert parse_faults("") == {}
    with pytest.raises(ValueError, match="'x:raise' is not INDEX:FAULT"):
        parse_faults("x:raise")
    with pytest.raises(ValueError, match="'1:segfault'"):
        parse_faults("1:segfault")


def test_run_config_round_trips_through_its_yaml_dict():
    c = RunConfig(data=Path("/d"), out=Path("runs/x"), address="auto", cpus_per_trial=0.5, gpus_per_trial=0.25,
                  chunks_s=(0.5, 1.0), sample_rates_hz=(8000,))
    assert RunConfig.from_dict(c.to_dict()) == c
    assert RunConfig.from_dict({**c.to_dict(), "from_a_newer_version": 1}) == c


@pytest.mark.parametrize("gpus, message", [(-1, "must be >= 0"), (1.5, "whole number")])
def test_gpus_per_trial_is_checked(gpus, message):
    with pytest.raises(UserInputError, match=message):
        RunConfig(data=Path("/d"), gpus_per_trial=gpus)


def test_a_trial_trains_on_cuda_only_when_given_a_gpu():
    import torch

    assert training_device([]) == "cpu"
    assert training_device(["0"]) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_more_gpus_per_trial_than_the_cluster_has_is_a_usage_error(esc10, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = small_esc10(esc10, tmp_path / "data", per_class_per_fold=1)
    p = cli(["--data", str(data), "--trials", "1", "--out", str(tmp_path / "run"), "--gpus-per-trial", "0.5",
             *SMALL_SEARCH], cwd=tmp_path, timeout=300)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("asc-search: error: --gpus-per-trial 0.5 is more than the 0 GPUs Ray has")


