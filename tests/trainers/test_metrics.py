import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

from asc_search._errors import UserInputError
from asc_search.trainers import bootstrap_ci, classification_metrics, clip_probabilities, full_metrics


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



NAMES = [f"c{k}" for k in range(4)]


def _predictions(n, accuracy, k=4, seed=0):
    """Labels and predictions with exactly ``round(accuracy * n)`` hits, the misses on the next class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    hit = np.zeros(n, dtype=bool)
    hit[rng.permutation(n)[: round(accuracy * n)]] = True
    y_pred = np.where(hit, y, (y + 1 + rng.integers(0, k - 1, n)) % k)
    return y, y_pred


def _probs(y_pred, k=4, confidence=0.7):
    p = np.full((len(y_pred), k), (1 - confidence) / (k - 1))
    p[np.arange(len(y_pred)), y_pred] = confidence
    return p


@pytest.mark.parametrize("metric", ["accuracy", "uar", "macro_f1"])
def test_bootstrap_ci_contains_the_point_estimate(metric):
    y, y_pred = _predictions(200, 0.7)
    point = {"accuracy": np.mean(y == y_pred), "uar": balanced_accuracy_score(y, y_pred),
             "macro_f1": f1_score(y, y_pred, average="macro")}[metric]
    low, high = bootstrap_ci(y, y_pred, metric, n_resamples=500, confidence=0.95, seed=0)
    assert low < point < high
    assert high - low > 0.02  # 200 clips: a real interval, not a point


def test_bootstrap_ci_narrows_as_clips_grow():
    widths = []
    for n in (50, 2000):
        y, y_pred = _predictions(n, 0.8)
        low, high = bootstrap_ci(y, y_pred, "accuracy", n_resamples=1000, confidence=0.95, seed=0)
        assert low <= 0.8 <= high
        widths.append(high - low)
    # the width of a binomial interval shrinks like 1/sqrt(n): sqrt(2000/50) ~ 6.3
    assert widths[1] < widths[0] / 4
    assert widths[0] == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 50), rel=0.25)


def test_bootstrap_ci_is_deterministic_with_a_seed_and_wider_at_higher_confidence():
    y, y_pred = _predictions(300, 0.6)
    a = bootstrap_ci(y, y_pred, "uar", n_resamples=400, confidence=0.95, seed=3)
    assert bootstrap_ci(y, y_pred, "uar", n_resamples=400, confidence=0.95, seed=3) == a
    assert bootstrap_ci(y, y_pred, "uar", n_resamples=400, confidence=0.95, seed=4) != a
    low99, high99 = bootstrap_ci(y, y_pred, "uar", n_resamples=400, confidence=0.99, seed=3)
    assert low99 <= a[0] and high99 >= a[1]


def test_vectorised_uar_interval_equals_sklearns_balanced_accuracy_on_the_same_resamples():
    y, y_pred = _predictions(120, 0.55, k=5, seed=2)
    y[:3] = 4  # a rare class: some resamples lack it, as sklearn then averages the classes present
    fast = bootstrap_ci(y, y_pred, "uar", n_resamples=300, seed=1)
    slow = bootstrap_ci(y, y_pred, _quiet_balanced_accuracy, n_resamples=300, seed=1)
    assert fast == pytest.approx(slow, abs=1e-12)


def _quiet_balanced_accuracy(a, b):
    with warnings.catch_warnings():  # resamples that lack a predicted class make sklearn warn
        warnings.simplefilter("ignore")
        return balanced_accuracy_score(a, b)


def test_bootstrap_ci_rejects_bad_input():
    y, y_pred = _predictions(20, 0.5)
    with pytest.raises(UserInputError, match="at least 2"):
        bootstrap_ci(y[:1], y_pred[:1])
    with pytest.raises(UserInputError, match="confidence"):
        bootstrap_ci(y, y_pred, confidence=95)
    with pytest.raises(UserInputError, match="metric"):
        bootstrap_ci(y, y_pred, "f2")
    with pytest.raises(UserInputError, match="shapes"):
        bootstrap_ci(y, y_pred[:-1])


def test_full_metrics_match_sklearn_and_hand_counts():
    y, y_pred = _predictions(400, 0.65, seed=5)
    probs = _probs(y_pred)
    devices = np.array(["a", "b"])[np.arange(400) % 2]
    m = full_metrics(y, probs, class_names=NAMES, groups=devices, n_bootstrap=200, seed=0)
    assert m["n_clips"] == 400
    assert m["accuracy"] == pytest.approx(0.65)
    assert m["uar"] == pytest.approx(balanced_accuracy_score(y, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, y_pred, average="macro"))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(400), y])))
    assert m["confusion_matrix"] == confusion_matrix(y, y_pred).tolist()
    for k, name in enumerate(NAMES):
        assert m["per_class_accuracy"][name] == pytest.approx(np.mean(y_pred[y == k] == k))
    for d in ("a", "b"):
        assert m["per_device_accuracy"][d] == pytest.approx(np.mean((y == y_pred)[devices == d]))
    for name in ("accuracy", "uar"):
        low, high = m[f"{name}_ci95"]
        assert low < m[name] < high
    assert m["bootstrap"]["n_resamples"] == 200 and m["bootstrap"]["method"] == "percentile"
    json.dumps(m)  # JSON-ready: no numpy scalars


def test_full_metrics_absent_class_and_no_bootstrap():
    y = np.array([0, 0, 1, 1])
    probs = _probs(np.array([0, 1, 1, 1]))
    m = full_metrics(y, probs, class_names=NAMES, n_bootstrap=0)
    assert m["per_class_accuracy"] == {"c0": 0.5, "c1": 1.0, "c2": None, "c3": None}
    assert m["accuracy_ci95"] is None and m["uar_ci95"] is None and m["bootstrap"] is None
    assert m["per_device_accuracy"] is None
    assert len(m["confusion_matrix"]) == 4 and m["confusion_matrix"][0] == [1, 1, 0, 0]


def test_full_metrics_rejects_bad_input():
    y = np.array([0, 1])
    with pytest.raises(UserInputError, match="class_names"):
        full_metrics(y, _probs(y), class_names=NAMES[:3])
    with pytest.raises(UserInputError, match=r"labels must be in \[0, 4\)"):
        full_metrics(np.array([0, 7]), _probs(y), class_names=NAMES)
    with pytest.raises(UserInputError, match="must match"):
        full_metrics(y, _probs(np.array([0, 1, 2])), class_names=NAMES)
    with pytest.raises(UserInputError, match="no clips"):
        full_metrics(y[:0], _probs(y)[:0], class_names=NAMES)


def test_estimate_metrics_reports_seen_and_unseen_devices_per_class_and_intervals():
    from asc_search.trainers import estimate_metrics

    rng = np.random.default_rng(0)
    n, k = 120, 3
    y = rng.integers(0, k, n)
    devices = np.array(["a", "b", "s1", "s2"])[np.arange(n) % 4]
    probs = rng.dirichlet(np.ones(k), n)
    probs[np.flatnonzero(devices != "s2"), y[devices != "s2"]] += 1.0  # right on a, b, s1; chance on s2
    probs /= probs.sum(1, keepdims=True)
    m = estimate_metrics(y, probs, class_names=["x", "y", "z"], devices=list(devices), seen_devices={"a", "b"})
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(float((pred == y).mean()))
    assert m["device_groups"]["seen"]["devices"] == ["a", "b"] and m["device_groups"]["unseen"]["devices"] == ["s1", "s2"]
    unseen = np.isin(devices, ["s1", "s2"])
    assert m["device_groups"]["unseen"]["accuracy"] == pytest.approx(float((pred[unseen] == y[unseen]).mean()))
    assert m["device_groups"]["seen"]["accuracy"] == 1.0 and m["per_device"]["s1"]["seen"] is False
    assert m["per_device"]["s2"]["accuracy"] < 0.7 and m["per_device"]["a"]["n_clips"] == 30
    for name, c in zip("xyz", range(k), strict=True):
        assert m["per_class"][name]["n_clips"] == int((y == c).sum())
        assert m["per_class"][name]["accuracy"] == pytest.approx(float((pred[y == c] == c).mean()))
        low, high = m["per_class"][name]["accuracy_ci95"]
        assert low <= m["per_class"][name]["accuracy"] <= high
    low, high = m["log_loss_ci95"]
    assert low < m["log_loss"] < high
    # intervals are the same for the same seed, and left out with n_bootstrap=0
    assert estimate_metrics(y, probs, class_names=["x", "y", "z"], devices=list(devices))["log_loss_ci95"] == [low, high]
    bare = estimate_metrics(y, probs, class_names=["x", "y", "z"], n_bootstrap=0)
    assert bare["log_loss_ci95"] is None and bare["per_device"] == {} and bare["device_groups"] == {}
