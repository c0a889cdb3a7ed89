"""INT8 export on real features: bytes and MACs on the .tflite equal the genome's; INT8 agrees with float."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from asc_search import UserInputError
from asc_search.constraints import count_complexity, patch_layout
from asc_search.data import decode_dataset, load_manifest
from asc_search.deploy import export_int8_tflite, run_int8, tflite_complexity
from asc_search.frontends import compute_clip_features
from asc_search.search_spaces import ConvStage, FrontendGenes, Genome, build_model
from asc_search.trainers import Normalisation, TrainSettings, fit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fsdd_small(fsdd):
    m = load_manifest(fsdd)
    clips = [c for c in m.clips if int(c.path.stem.rsplit("_", 1)[1]) in (0, 1, 5, 6, 7, 8, 9, 10)]
    return decode_dataset(replace(m, clips=tuple(clips)), sample_rate_hz=8000)


def test_exported_model_matches_genome_and_float_model(fsdd_small, tmp_path):
    data = fsdd_small
    g = Genome(frontend=FrontendGenes(sample_rate_hz=8000, n_bins=32, hop_ms=16, chunk_s=0.5, deltas=2),
               stages=(ConvStage(width=16, kernel=5, activation="relu", pool="max2"),
                       ConvStage(width=24, kernel=3, activation="tanh", pool="avg2"),
                       ConvStage(width=32, kernel=3, activation="relu", pool="none")), head_width=32)
    feats = compute_clip_features(data, patch_layout(g))
    train, val = np.flatnonzero(~data.is_validation), np.flatnonzero(data.is_validation)
    norm = Normalisation.fit(feats, train, deltas=g.frontend.deltas)
    model = build_model(g, data.n_classes)
    fit(model, feats, data.labels, train, val, norm, TrainSettings(epochs=3, learning_rate=3e-3))
    x_train, _ = feats.patches(train)
    x_val, _ = feats.patches(val)
    x_train, x_val = norm.apply(x_train), norm.apply(x_val)
    path = export_int8_tflite(model, x_train[:200], tmp_path / "m.tflite")
    c = count_complexity(g, n_classes=data.n_classes)
    t = tflite_complexity(path)
    assert t.weight_bytes == c.int8_bytes
    assert (t.int8_weights, t.int32_biases) == (c.weight_params, c.bias_params)
    assert t.macs_per_patch == c.macs_per_patch
    with torch.inference_mode():
        ref = model.eval()(torch.from_numpy(x_val)).numpy()
    for xnnpack in (True, False):
        q = run_int8(path, x_val, xnnpack=xnnpack)
        assert (q.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_run_int8_rejects_a_float_model(tmp_path):
    import tensorflow as tf

    m = tf.keras.Sequential([tf.keras.Input((4, 4, 1)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(2)])
    path = tmp_path / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    with pytest.raises(UserInputError, match="not int8"):
        run_int8(path, np.zeros((1, 1, 4, 4), np.float32))
