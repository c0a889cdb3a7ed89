import numpy as np
import pytest

from asc_search.trainers import classification_metrics, clip_probabilities


def test_clip_probabilities_are_the_mean_of_patch_probabilities():
    patch = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    owner = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(clip_probabilities(patch, owner, 2), [[0.6, 0.4], [0.4, 0.6]])


def test_classification_metrics_accuracy_log_loss_uar():
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["uar"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
