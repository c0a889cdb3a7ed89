import itertools

import numpy as np
import pytest

from asc_search._pareto import hypervolume, hypervolume_limits, normalised_hypervolume, pareto_front


def test_pareto_front_of_accuracy_and_cost():
    pts = [(0.8, 10, 5), (0.7, 5, 5), (0.6, 20, 20), (0.8, 10, 5), (0.9, 30, 1), (0.5, 5, 6)]
    assert pareto_front(pts, ["max", "min", "min"]) == [0, 1, 3, 4]


def test_pareto_front_rejects_unknown_sense():
    with pytest.raises(ValueError, match="senses"):
        pareto_front([(1, 2)], ["max", "lower"])


def test_hypervolume_2d():
    mm = ("max", "min")
    assert hypervolume([(0.5, 1.0)], (0.0, 2.0), mm) == pytest.approx(0.5)
    assert hypervolume([(0.5, 1.0), (0.8, 1.5)], (0.0, 2.0), mm) == pytest.approx(0.5 * 0.5 + 0.8 * 0.5)
    assert hypervolume([(0.5, 3.0)], (0.0, 2.0), mm) == 0.0
    assert hypervolume([], (0.0, 2.0), mm) == 0.0


def _union_of_boxes(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by minimisation points up to ``ref``, by inclusion-exclusion over the points' boxes."""
    pts = [p for p in points if (p < ref).all()]
    vol = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = np.max(subset, axis=0)
            vol += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return vol


@pytest.mark.parametrize("seed", range(20))
def test_3d_hypervolume_is_exact(seed):
    """(accuracy max, MACs min, bytes min): moocore's value equals the union of the dominated boxes."""
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(0, 1, 7), rng.uniform(0, 1.2, 7), rng.uniform(0, 1.2, 7)])
    expected = _union_of_boxes(np.column_stack([-pts[:, 0], pts[:, 1:]]), np.array([0.0, 1.0, 1.0]))
    assert hypervolume(pts, (0.0, 1.0, 1.0), ("max", "min", "min")) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert normalised_hypervolume([(a, 1e6 * m, 1e5 * b) for a, m, b in pts], max_macs=1e6,
                                  max_int8_bytes=1e5) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_normalised_hypervolume_counts_the_third_objective():
    one = [(0.5, 500_000, 64_000)]  # half the accuracy, half the MACs limit, half the byte limit
    assert normalised_hypervolume(one, max_macs=1_000_000, max_int8_bytes=128_000) == pytest.approx(0.125)
    # a point equal in accuracy and MACs but smaller adds volume a 2-D (accuracy, MACs) hypervolume cannot see
    two = one + [(0.5, 500_000, 32_000)]
    assert normalised_hypervolume(two, max_macs=1_000_000, max_int8_bytes=128_000) == pytest.approx(0.5 * 0.5 * 0.75)
    assert normalised_hypervolume([(0.9, 2_000_000, 1_000)], max_macs=1_000_000, max_int8_bytes=128_000) == 0.0
    with pytest.raises(ValueError, match="max_macs"):
        normalised_hypervolume(one, max_macs=0, max_int8_bytes=1)
    assert hypervolume_limits(one, None, 100_000) == (pytest.approx(550_000), 100_000.0)


def test_knee_point_prefers_the_bend_of_the_front():
    from asc_search._pareto import knee_point

    front = [(0.50, 1.0), (0.80, 2.0), (0.85, 10.0), (0.86, 30.0)]
    assert knee_point(front) == 1
    assert knee_point([(0.5, 1.0)]) == 0
    assert knee_point([]) is None
