"""DeepSpectrumLite image front-end: dB spectrograms as colour-mapped, ImageNet-normalised RGB images.

After Amiriparian et al., "DeepSpectrumLite: A Power-Efficient Transfer Learning Framework for Embedded
Speech and Audio Processing from Decentralised Data" (2022): each spectrogram is min-max scaled on its
own, mapped through a colour map (viridis by default), turned so that low frequencies are at the bottom
as in a plot, resized to the network's input size and normalised with the ImageNet statistics, so that
an ImageNet-pretrained CNN can take it.

Differences from the DeepSpectrumLite code: levels are quantised to the colour map's 256 entries
(matplotlib's own rule) instead of interpolated between them, and the bilinear resize has no
anti-aliasing (``torch.nn.functional.interpolate``, ``align_corners=False``), so that it exports to ONNX.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asc_search._errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUT_ENTRIES = 256


def _check_size(size_px: int | Sequence[int]) -> tuple[int, int]:
    try:
        pair = (size_px, size_px) if isinstance(size_px, int | np.integer) else tuple(size_px)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1
                                 for s in pair):
        raise UserInputError(f"size_px must be an int >= 1 or a (height, width) pair of them, got {size_px!r}")
    return int(pair[0]), int(pair[1])


def _check_stats(name: str, values: Sequence[float], *, positive: bool) -> tuple[float, float, float]:
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(np.isfinite(vals)) or (positive and min(vals) <= 0):
        need = "3 finite values > 0" if positive else "3 finite values"
        raise UserInputError(f"{name} must be {need} (R, G, B), got {values!r}")
    return vals  # type: ignore[return-value]


def colour_map_table(colour_map: str = "viridis") -> np.ndarray:
    """The 256-entry RGB lookup table of a matplotlib colour map.

    Args:
        colour_map: A name in ``matplotlib.colormaps`` (e.g. ``"viridis"``, ``"magma"``).

    Returns:
        Shape ``(256, 3)``, float64, RGB in [0, 1]; row ``k`` is the colour of level ``k``.

    Raises:
        UserInputError: ``colour_map`` is not a matplotlib colour map.
    """
    if colour_map not in matplotlib.colormaps:
        raise UserInputError(
            f"unknown colour map {colour_map!r}: use a name in matplotlib.colormaps, e.g. viridis, magma, "
            "inferno, plasma, cividis"
        )
    cmap = matplotlib.colormaps[colour_map]
    if cmap.N != _LUT_ENTRIES:
        cmap = cmap.resampled(_LUT_ENTRIES)
    return np.asarray(cmap(np.arange(_LUT_ENTRIES)))[:, :3]


class ColourMapImage(nn.Module):
    """dB spectrograms ``(N, F, T)`` -> normalised RGB images ``(N, 3, height, width)`` (DeepSpectrumLite).

    Per sample: min-max scale to [0, 1], quantise to the colour map's 256 levels (level ``min(floor(256 s),
    255)``, which is how ``matplotlib`` maps floats), look the colour up, flip so that frequency bin 0 is
    the bottom row, resize bilinearly (``align_corners=False``, no anti-aliasing), then subtract ``mean``
    and divide by ``std`` per channel. A constant spectrogram maps to the colour map's first colour.
    Exportable to ONNX (``dynamo=False``).

    Args:
        size_px: Output ``(height, width)`` in pixels, or one int for a square image.
        colour_map: A matplotlib colour map name.
        mean: Per-channel mean subtracted from RGB in [0, 1] (default ImageNet).
        std: Per-channel divisor (default ImageNet).

    Raises:
        UserInputError: A size is not a positive int, the colour map is unknown, or ``std`` has a value <= 0.
    """

    def __init__(self, *, size_px: int | Sequence[int] = 224, colour_map: str = "viridis",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.size_px = _check_size(size_px)
        self.colour_map = colour_map
        self.register_buffer("lut", torch.tensor(colour_map_table(colour_map), dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(_check_stats("mean", mean, positive=False)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_check_stats("std", std, positive=True)).view(1, 3, 1, 1))

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """``(N, F, T)`` or ``(N, 1, F, T)`` dB (any finite scale) -> ``(N, 3, height, width)`` float32.

        Raises:
            UserInputError: Wrong shape, or a value is not finite (checked outside ONNX tracing).
        """
        x = spectrogram
        if x.dim() == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 3:
            raise UserInputError(f"spectrograms must have shape (N, F, T) or (N, 1, F, T), got {tuple(x.shape)}")
        if not torch.jit.is_tracing() and not bool(torch.isfinite(x).all()):
            raise UserInputError("spectrograms contain NaN or infinite values")
        lo = x.amin(dim=(1, 2), keepdim=True)
        span = torch.clamp(x.amax(dim=(1, 2), keepdim=True) - lo, min=torch.finfo(x.dtype).tiny)
        scaled = (x - lo) / span
        level = torch.clamp(torch.floor(scaled * _LUT_ENTRIES), 0, _LUT_ENTRIES - 1).long()
        rgb = self.lut[level]  # (N, F, T, 3)
        rgb = rgb.permute(0, 3, 1, 2).flip(2)  # (N, 3, F, T), bin 0 in the bottom row
        rgb = F.interpolate(rgb, size=self.size_px, mode="bilinear", align_corners=False)
        return (rgb - self.mean) / self.std


@functools.lru_cache(maxsize=8)
def _cached_module(size_px: tuple[int, int], colour_map: str) -> ColourMapImage:
    return ColourMapImage(size_px=size_px, colour_map=colour_map).eval()


def spectrogram_to_image(x: np.ndarray | torch.Tensor, *, size_px: int | Sequence[int] = 224,
                         colour_map: str = "viridis") -> torch.Tensor:
    """DeepSpectrumLite images of dB spectrograms with ImageNet normalisation (see :class:`ColourMapImage`).

    Args:
        x: Spectrograms in dB, shape ``(N, F, T)`` or ``(N, 1, F, T)``.
        size_px: Output ``(height, width)`` in pixels, or one int for a square image.
        colour_map: A matplotlib colour map name.

    Returns:
        Shape ``(N, 3, height, width)``, float32, on ``x``'s device (CPU for arrays).

    Raises:
        UserInputError: Bad shape, non-finite values, bad size or unknown colour map.
    """
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not torch.is_floating_point(t):
        t = t.float()
    module = _cached_module(_check_size(size_px), colour_map).to(t.device)
    with torch.no_grad():
        return module(t)
