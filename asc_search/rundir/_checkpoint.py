"""``model.pt``: a trained candidate's weights plus everything that rebuilds and feeds it; the one place a model
is rebuilt from it."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from asc_search._errors import AscSearchError
from asc_search.rundir._layout import HISTORY_FILE, MODEL_FILE
from asc_search.search_spaces import Genome, build_model
from asc_search.trainers import Normalisation


@dataclass(kw_only=True)
class Checkpoint:
    """A ``model.pt`` read back.

    Args:
        genome: The candidate.
        state_dict: The trained weights (of the pruned network when the genome prunes).
        n_classes: Output classes.
        class_names: Class names, in label order.
        normalisation: The per-bin feature normalisation the model was trained with.
        metrics: The trial's final metrics (plain JSON types).
    """

    genome: Genome
    state_dict: dict
    n_classes: int
    class_names: list[str]
    normalisation: Normalisation
    metrics: dict = field(default_factory=dict)

    @property
    def sample_rate_hz(self) -> int:
        """The front-end's sample rate (Hz)."""
        return self.genome.frontend.sample_rate_hz

    def build_model(self) -> nn.Module:
        """The trained network in eval mode: ``build_model(genome, n_classes)`` with the saved weights.

        Input ``(batch, channels, n_bins, frames)`` normalised features; output ``(batch, n_classes)`` logits.
        """
        model = build_model(self.genome, self.n_classes)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(path: Path, *, genome: Genome, state_dict: dict, n_classes: int, class_names: list[str],
                    norm: Normalisation, metrics: dict) -> None:
    """Write ``model.pt``: weights plus everything needed to rebuild and feed the model.

    Everything but the weights is plain Python (dicts, lists, strings, numbers), so the file loads with
    ``torch.load(..., weights_only=True)``.
    """
    torch.save({"state_dict": state_dict, "genome": genome.to_dict(), "n_classes": n_classes,
                "class_names": class_names, "sample_rate_hz": genome.frontend.sample_rate_hz,
                "normalisation": norm.to_dict(), "metrics": _plain(metrics)}, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a ``model.pt`` written by ``save_checkpoint`` (``weights_only=True``: no code is unpickled).

    Raises:
        Whatever ``torch.load`` raises for a missing or cut-off file.
    """
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return Checkpoint(genome=Genome.from_dict(raw["genome"]), state_dict=raw["state_dict"],
                      n_classes=int(raw["n_classes"]), class_names=list(raw["class_names"]),
                      normalisation=Normalisation.from_dict(raw["normalisation"]), metrics=raw.get("metrics", {}))


def _plain(obj):
    """JSON-like copy (numpy scalars to Python numbers), loadable with ``weights_only=True``."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def copy_checkpoint(row: dict, dest: Path) -> Path:
    """Copy a trial's ``model.pt`` (and ``history.json``) from its Ray checkpoint folder (``row["_checkpoint"]``)
    into ``dest``, each through a temporary name; return the new ``model.pt``.

    Raises:
        AscSearchError: The trial has no checkpoint.
    """
    src = row.get("_checkpoint")
    if not src or not (Path(src) / MODEL_FILE).exists():
        raise AscSearchError(f"trial {row['trial_id']} has no checkpoint with {MODEL_FILE}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, HISTORY_FILE):
        if (Path(src) / name).exists():
            tmp = dest / f".{name}.tmp"
            shutil.copyfile(Path(src) / name, tmp)
            os.replace(tmp, dest / name)
    return dest / MODEL_FILE
