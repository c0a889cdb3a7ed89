import pytest

from asc_search._pareto import hypervolume_2d, pareto_front


def test_pareto_front_of_accuracy_and_cost():
    pts = [(0.8, 10, 5), (0.7, 5, 5), (0.6, 20, 20), (0.8, 10, 5), (0.9, 30, 1), (0.5, 5, 6)]
    assert pareto_front(pts, ["max", "min", "min"]) == [0, 1, 3, 4]


def test_pareto_front_rejects_unknown_sense():
    with pytest.raises(ValueError, match="senses"):
        pareto_front([(1, 2)], ["max", "lower"])


def test_hypervolume_2d():
    assert hypervolume_2d([(0.5, 1.0)], (0.0, 2.0)) == pytest.approx(0.5)
    assert hypervolume_2d([(0.5, 1.0), (0.8, 1.5)], (0.0, 2.0)) == pytest.approx(0.5 * 0.5 + 0.8 * 0.5)
    assert hypervolume_2d([(0.5, 3.0)], (0.0, 2.0)) == 0.0


def test_knee_point_prefers_the_bend_of_the_front():
    from asc_search._pareto import knee_point

    front = [(0.50, 1.0), (0.80, 2.0), (0.85, 10.0), (0.86, 30.0)]
    assert knee_point(front) == 1
    assert knee_point([(0.5, 1.0)]) == 0
    assert knee_point([]) is None
