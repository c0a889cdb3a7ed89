import csv
import io

import matplotlib
import numpy as np
import pytest
import soundfile as sf
import torch

from asc_search import UserInputError
from asc_search.frontends._image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColourMapImage,
    colour_map_table,
    spectrogram_to_image,
)
from asc_search.frontends._registry import FrontendConfig, build_frontend

VIRIDIS = np.asarray(matplotlib.colormaps["viridis"].colors)  # (256, 3)


def _rgb(image: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation: (N, 3, H, W) -> RGB in [0, 1]."""
    mean = np.asarray(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD).reshape(1, 3, 1, 1)
    return image.numpy().astype(np.float64) * std + mean


def test_lookup_table_is_matplotlibs_viridis():
    table = colour_map_table("viridis")
    assert table.shape == (256, 3)
    np.testing.assert_array_equal(table, VIRIDIS)
    assert colour_map_table("tab10").shape == (256, 3)  # resampled to 256 levels


def test_output_shape_and_input_types(esc10):
    with open(esc10 / "metadata.csv", newline="") as f:
        row = next(csv.DictReader(f))
    audio, _ = sf.read(esc10 / row["filename"], dtype="float32")
    cfg = FrontendConfig(kind="logmel", sample_rate_hz=16000, n_bins=64, win_ms=25, hop_ms=10)
    with torch.inference_mode():
        spec = build_frontend(cfg)(torch.from_numpy(audio[:32000].reshape(2, 16000)))
    for x in (spec, spec.numpy(), spec[:, None], spec.double()):
        img = spectrogram_to_image(x)
        assert img.shape == (2, 3, 224, 224) and img.dtype == torch.float32
        rgb = _rgb(img)
        assert rgb.min() >= -1e-6 and rgb.max() <= 1 + 1e-6
    assert spectrogram_to_image(spec, size_px=(96, 128)).shape == (2, 3, 96, 128)


def test_same_size_image_equals_matplotlib_colour_mapping_flipped():
    rng = np.random.default_rng(0)
    spec = rng.normal(-40, 15, size=(3, 40, 61))
    img = _rgb(ColourMapImage(size_px=(40, 61))(torch.from_numpy(spec)))
    for i in range(3):
        s = spec[i]
        expected = matplotlib.colormaps["viridis"]((s - s.min()) / (s.max() - s.min()))[..., :3]
        np.testing.assert_allclose(img[i].transpose(1, 2, 0), expected[::-1], rtol=0, atol=1e-6)


def test_constant_zero_region_is_the_first_colour_and_the_brightest_the_last():
    spec = np.zeros((2, 64, 100), dtype=np.float32)
    spec[:, 32:, 50:] = np.linspace(1, 40, 50, dtype=np.float32)  # upper frequencies, later frames
    spec[1, 40:60, 70:95] = 55.0  # a bright block in the second sample only
    rgb = _rgb(spectrogram_to_image(spec))
    # Bins 0..31 (all frames) and frames 0..49 are 0 = the minimum: viridis' first colour. Bin 0 is at the
    # bottom, so the zero bins fill the lower half of the image; frames 0..49 fill the left half.
    np.testing.assert_allclose(rgb[:, :, 120:, :], np.broadcast_to(VIRIDIS[0][None, :, None, None],
                                                                   (2, 3, 104, 224)), atol=1e-5)
    np.testing.assert_allclose(rgb[:, :, :, :100], np.broadcast_to(VIRIDIS[0][None, :, None, None],
                                                                   (2, 3, 224, 100)), atol=1e-5)
    # Sample 0: its maximum is the last column of the ramp; sample 1: the block (bins 40..59, frames 70..94
    # -> rows 224 - 60 * 3.5 .. 224 - 40 * 3.5, columns 70 * 2.24 .. 95 * 2.24), interior pixels.
    np.testing.assert_allclose(rgb[0, :, 10:100, 223], np.broadcast_to(VIRIDIS[-1][:, None], (3, 90)), atol=1e-5)
    np.testing.assert_allclose(rgb[1, :, 20:80, 160:210], np.broadcast_to(VIRIDIS[-1][:, None, None], (3, 60, 50)),
                               atol=1e-5)
    assert not np.allclose(rgb[0, :, 20:80, 160:210], VIRIDIS[-1][:, None, None], atol=1e-3)


def test_low_frequencies_end_at_the_bottom():
    spec = np.zeros((1, 40, 50), dtype=np.float32)
    spec[0, :5] = 30.0  # loud in the five lowest bins
    rgb = _rgb(spectrogram_to_image(spec))[0]
    np.testing.assert_allclose(rgb[:, -10:, :], np.broadcast_to(VIRIDIS[-1][:, None, None], (3, 10, 224)), atol=1e-5)
    np.testing.assert_allclose(rgb[:, :150, :], np.broadcast_to(VIRIDIS[0][:, None, None], (3, 150, 224)), atol=1e-5)


def test_constant_spectrogram_is_the_first_colour():
    rgb = _rgb(spectrogram_to_image(np.full((1, 20, 30), -17.0)))
    np.testing.assert_allclose(rgb[0], np.broadcast_to(VIRIDIS[0][:, None, None], (3, 224, 224)), atol=1e-5)


def test_other_colour_map_and_statistics():
    m = ColourMapImage(size_px=8, colour_map="magma", mean=(0, 0, 0), std=(1, 1, 1))
    img = m(torch.zeros(1, 4, 4)).numpy()
    np.testing.assert_allclose(img[0, :, 0, 0], matplotlib.colormaps["magma"](0)[:3], atol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size_px": 0}, "size_px must be an int >= 1.*got 0"),
    ({"size_px": (224, -1)}, r"got \(224, -1\)"),
    ({"size_px": (224, 224, 3)}, "size_px"),
    ({"size_px": 22.4}, "size_px"),
    ({"colour_map": "viridiss"}, "unknown colour map 'viridiss'.*viridis"),
    ({"std": (0.2, 0.0, 0.2)}, "std must be 3 finite values > 0"),
    ({"mean": (0.5, 0.5)}, "mean must be 3 finite values"),
])
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        ColourMapImage(**kwargs)


def test_bad_inputs_are_rejected():
    with pytest.raises(UserInputError, match=r"\(N, F, T\).*got \(40, 50\)"):
        spectrogram_to_image(np.zeros((40, 50)))
    with pytest.raises(UserInputError, match=r"got \(1, 2, 40, 50\)"):
        spectrogram_to_image(np.zeros((1, 2, 40, 50)))
    bad = np.zeros((1, 40, 50))
    bad[0, 3, 4] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        spectrogram_to_image(bad)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_image_front_end_exports_to_onnx():
    import onnxruntime as ort

    m = ColourMapImage().eval()
    x = torch.randn(2, 40, 98) * 10 - 30
    buf = io.BytesIO()
    torch.onnx.export(m, (x,), buf, input_names=["input"], opset_version=18, dynamo=False)
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, m(x).numpy(), rtol=0, atol=1e-4)
