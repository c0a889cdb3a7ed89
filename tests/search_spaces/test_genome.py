import subprocess
import sys

import optuna
import pytest

from asc_search import UserInputError
from asc_search.search_spaces import ConvStage, Genome, SpaceOptions, genome_from_params, sample_genome


def _sampled(n=20, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append((sample_genome(t, SpaceOptions()), t.params))
        study.tell(t, 0.0)
    return out


def test_json_round_trip_and_params_round_trip():
    for g, params in _sampled():
        assert Genome.from_json(g.to_json()) == g
        assert genome_from_params(params) == g
        assert 2 <= len(g.stages) <= 4


def test_genome_id_is_stable_across_processes():
    g, _ = _sampled(1, seed=3)[0]
    code = f"from asc_search.search_spaces import Genome; print(Genome.from_json({g.to_json()!r}).genome_id)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == g.genome_id and len(other) == 12


def test_bad_genes_are_rejected_with_the_value():
    with pytest.raises(UserInputError, match="kernel must be one of .*got 4"):
        ConvStage(width=8, kernel=4, activation="relu", pool="none")
    with pytest.raises(UserInputError, match="activation.*'gelu'"):
        ConvStage(width=8, kernel=3, activation="gelu", pool="none")
