"""DeepSpectrumLite's two-phase transfer learning: the head alone, then the last N layers unfrozen at a tenth of
the learning rate (Amiriparian et al. 2022, "DeepSpectrumLite", §III: an ImageNet CNN on colour-mapped
spectrograms). Pretrained weights come from a local file the user names; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asc_search._errors import UserInputError
from asc_search.frontends import ClipFeatures
from asc_search.trainers._fit import FitResult, Normalisation, TrainSettings, fit

log = logging.getLogger(__name__)


def load_pretrained(model: nn.Module, path: str | Path) -> dict:
    """Copy every tensor of a local state-dict file whose name and shape match ``model``'s.

    Tensors whose shape differs (a classifier for other classes) keep their fresh initialisation.

    Args:
        model: The network.
        path: A ``torch.save``d state dict (or a ``model.pt`` of a run, whose ``state_dict`` is used), read with
            ``weights_only=True``.

    Returns:
        ``{"loaded": [names], "skipped_shape": [names], "missing": [names]}``.

    Raises:
        UserInputError: The file does not exist, is not a state dict, or no tensor matches the model.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"pretrained weights {path} do not exist; name a local state-dict file "
                             "(nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserInputError(f"pretrained weights {path} cannot be read as a PyTorch state dict: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserInputError(f"pretrained weights {path} hold a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    loaded = [k for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)]
    skipped = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if not loaded:
        raise UserInputError(f"no tensor of {path} matches the model (names and shapes differ); pretrained weights "
                             "must come from the same architecture")
    model.load_state_dict({**own, **{k: state[k] for k in loaded}})
    report = {"loaded": loaded, "skipped_shape": skipped, "missing": [k for k in own if k not in state]}
    log.info("pretrained %s: %d tensors loaded, %d of another shape kept fresh", path, len(loaded), len(skipped))
    return report


@contextlib.contextmanager
def _frozen(model: nn.Module, trainable: list[nn.Module]):
    """Only ``trainable``'s parameters get gradients; the other batch-norm layers keep their statistics (held in
    eval mode even when ``fit`` calls ``model.train()``). Everything is restored on exit."""
    keep = {id(p) for m in trainable for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    held = [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(id(p) in keep for p in m.parameters())]
    for m in held:
        m.eval()
        m.train = lambda mode=True, _m=m: _m  # an instance attribute: model.train() leaves it in eval mode
    try:
        yield
    finally:
        for m in held:
            del m.train
        for p in model.parameters():
            p.requires_grad_(True)


def two_phase_transfer(model: nn.Module, pretrained: str | Path, features: ClipFeatures, labels: np.ndarray,
                       train_clips: np.ndarray, val_clips: np.ndarray, norm: Normalisation, settings: TrainSettings,
                       *, unfreeze_last: int = 1, head_epochs: int | None = None, device: str = "cpu",
                       ) -> tuple[FitResult, FitResult, dict]:
    """Fine-tune a pretrained backbone in DeepSpectrumLite's two phases.

    Phase 1 trains the head alone (``model.head``) at ``settings.learning_rate``; phase 2 also unfreezes the last
    ``unfreeze_last`` blocks of ``model.features`` at a tenth of it. Frozen layers keep their batch-norm statistics
    (their modules stay in eval mode).

    Args:
        model: A network with ``features`` (an ``nn.Sequential`` of blocks) and ``head`` (``CandidateCNN``), input
            ``(B, C, F, T)``.
        pretrained: Local state-dict file (``load_pretrained``).
        features, labels, train_clips, val_clips, norm: As for ``fit``.
        settings: Phase 2's settings (epochs, learning rate x 10 ...); phase 1 uses ``head_epochs`` (default: the
            same epochs) at ``settings.learning_rate``.
        unfreeze_last: Blocks of ``model.features`` trained in phase 2 (>= 0).
        head_epochs: Epochs of phase 1.
        device: ``cpu`` or ``cuda``.

    Returns:
        ``(phase_1, phase_2, load_report)``; ``model`` holds phase 2's best weights.

    Raises:
        UserInputError: ``unfreeze_last`` out of range, or unusable pretrained weights.
    """
    blocks = list(getattr(model, "features", []))
    if not hasattr(model, "head") or not 0 <= unfreeze_last <= len(blocks):
        raise UserInputError(f"unfreeze_last must be in [0, {len(blocks)}] (the model's feature blocks) and the model "
                             f"needs a head, got {unfreeze_last}")
    report = load_pretrained(model, pretrained)

    head = [model.head]
    with _frozen(model, head):
        phase1 = fit(model, features, labels, train_clips, val_clips, norm,
                     dataclasses.replace(settings, epochs=head_epochs or settings.epochs), device=device)
    tuned = head + blocks[len(blocks) - unfreeze_last:]
    with _frozen(model, tuned):
        phase2 = fit(model, features, labels, train_clips, val_clips, norm,
                     dataclasses.replace(settings, learning_rate=settings.learning_rate / 10), device=device)
    for p in model.parameters():
        p.requires_grad_(True)
    return phase1, phase2, report
