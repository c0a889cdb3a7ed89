"""Shared fixture of the trainer tests: a small real ESC-10 subset at 8 kHz with its log-mel features."""

import pytest

from asc_search.constraints import patch_layout
from asc_search.data import decode_dataset, load_manifest
from asc_search.frontends import FeatureCache
from asc_search.search_spaces import ArchSpec, FrontendGenes, Genome


@pytest.fixture(scope="session")
def esc10_small(esc10, tmp_path_factory):
    from tests.conftest import write_subset_manifest

    csv = write_subset_manifest(esc10, tmp_path_factory.mktemp("kd") / "subset.csv", per_class_per_group=2,
                                columns=("filename", "label", "fold"), group_column="fold")
    data = decode_dataset(load_manifest(csv, test_fold="none"), sample_rate_hz=8000)
    genome = Genome(frontend=FrontendGenes(sample_rate_hz=8000, n_bins=32, hop_ms=32.0, chunk_s=1.0),
                    arch=ArchSpec(stages=(("conv_c8_k3_s2x2_relu",), ("conv_c8_k3_relu",))))
    features, _ = FeatureCache(tmp_path_factory.mktemp("cache")).get(data, patch_layout(genome))
    return data, genome, features


@pytest.fixture(scope="session")
def esc10_split(esc10_small):
    """``esc10_small`` with its training / validation clip indices and the normalisation fit on training:
    ``(data, genome, features, train, val, norm)``."""
    import numpy as np

    from asc_search.trainers import Normalisation

    data, genome, features = esc10_small
    train, val = np.flatnonzero(data.is_train), np.flatnonzero(data.is_validation)
    return data, genome, features, train, val, Normalisation.fit(features, train)
