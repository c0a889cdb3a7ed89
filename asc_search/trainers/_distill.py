"""Knowledge distillation: the loss of the low-sampling-rate self-distillation seed and cached teacher logits.

The loss (Kim et al., low-sampling-rate acoustic scene classification with self-distillation, eq. 1-2; the
form of Hinton et al. 2015):

    L = α · CE(y_s, y) + (1 − α) · T² · KL(q_t ‖ q_s),   q = softmax(z / T)

Teachers (``TrainingGenes.kd_teacher``): BASD (Born-Again self-distillation: a first generation of the same
network on the same input), CSSD (cross-sampling-rate self-distillation: the same network trained on higher-rate
audio of the same clips) and an ensemble (the mean of several trained members). Their logits are computed
once, on every evaluation patch of every clip (50 % overlap), and cached (``TeacherLogits``); a student crop
looks up the teacher patch whose start is nearest in time (in seconds, so a teacher at another sample rate,
hop or patch length lines up with the student), so nothing is recomputed per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asc_search._errors import UserInputError
from asc_search.frontends import ClipFeatures
from asc_search.trainers._augment import soft_target_loss


def kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_probs: torch.Tensor, *, alpha: float,
            temperature: float) -> torch.Tensor:
    """α · CE(y_s, y) + (1 − α) · T² · KL(q_t ‖ q_s), averaged over the batch.

    Args:
        student_logits: ``(B, K)`` student logits z_s.
        targets: ``(B, K)`` label probabilities y (one-hot, or mixed by mixup/CutMix); CE is the soft-target
            cross-entropy ``-Σ y log softmax(z_s)``.
        teacher_probs: ``(B, K)`` q_t = softmax(z_t / T) (mixed the same way as ``targets`` when a mixing
            augmentation ran).
        alpha: Weight of the hard-label term, in [0, 1].
        temperature: T > 0.

    Returns:
        Scalar loss.

    Raises:
        UserInputError: ``alpha`` outside [0, 1] or ``temperature`` <= 0.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserInputError(f"kd alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise UserInputError(f"kd temperature must be > 0, got {temperature}")
    ce = -(targets * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
    return alpha * ce + (1.0 - alpha) * soft_target_loss(student_logits, teacher_probs, temperature=temperature)


@dataclass(kw_only=True)
class _MemberLogits:
    offsets: np.ndarray  # (n_clips + 1,) first patch of each clip in ``logits``
    hop_s: float  # time between patch starts (s)
    logits: np.ndarray  # (n_patches, K) float32


class TeacherLogits:
    """Teacher logits cached on every evaluation patch of every clip, looked up by clip and crop start time.

    With several members (an ensemble teacher) the teacher's probabilities are the mean of the members'
    softened probabilities.

    Args:
        members: One entry a teacher network (built by ``compute_teacher_logits``).
    """

    def __init__(self, members: list[_MemberLogits]) -> None:
        if not members:
            raise ValueError("a teacher needs at least one member")
        self.members = members
        self._torch: dict = {}

    @property
    def n_classes(self) -> int:
        """Classes of the teacher's output."""
        return int(self.members[0].logits.shape[1])

    def logits_at(self, clips: np.ndarray, start_s: np.ndarray, member: int = 0) -> np.ndarray:
        """Logits of the teacher patch nearest in time to each crop.

        Args:
            clips: Dataset index of each crop's clip, shape ``(B,)``.
            start_s: Crop start within its clip (s), shape ``(B,)``.
            member: Which member.

        Returns:
            ``(B, K)`` float32.
        """
        m = self.members[member]
        first = m.offsets[clips]
        count = m.offsets[clips + 1] - first
        k = np.clip(np.rint(start_s / m.hop_s).astype(np.int64), 0, np.maximum(count - 1, 0))
        return m.logits[first + k]

    def probs(self, clips: np.ndarray, start_s: np.ndarray, temperature: float,
              device: str | torch.device = "cpu") -> torch.Tensor:
        """q_t = softmax(z_t / T) of the nearest teacher patch, averaged over members.

        Returns:
            ``(B, K)`` float32 tensor on ``device``.
        """
        out = None
        for i in range(len(self.members)):
            z = torch.from_numpy(self.logits_at(clips, start_s, i)).to(device)
            p = torch.softmax(z / temperature, dim=1)
            out = p if out is None else out + p
        return out / len(self.members)

    @classmethod
    def combine(cls, teachers: list[TeacherLogits]) -> TeacherLogits:
        """One teacher whose members are all the members of ``teachers`` (an ensemble teacher)."""
        return cls([m for t in teachers for m in t.members])


TEACHER_GROUP_PATCHES = 8192
"""Patches ``compute_teacher_logits`` builds, normalises and runs at once (rounded down to whole batches)."""


def compute_teacher_logits(model: nn.Module, features: ClipFeatures, norm, clips: np.ndarray | None = None, *,
                           batch_size: int = 256) -> TeacherLogits:
    """Run a trained teacher once over the evaluation patches of ``clips`` (default: every clip).

    Args:
        model: Trained teacher ``(B, C, F, T) -> (B, K)``, on any device.
        features: The teacher's own features (its front-end, sample rate and patch length).
        norm: The teacher's input normalisation (``Normalisation``).
        clips: Dataset indices to cover; the others get no logits (a lookup for them is invalid).
        batch_size: Patches a forward pass.

    Returns:
        The cache; ``logits_at`` is indexed by dataset clip index.
    """
    n_clips = len(features.offsets) - 1
    clips = np.arange(n_clips) if clips is None else np.asarray(clips)
    counts = np.zeros(n_clips, dtype=np.int64)
    counts[clips] = [len(features.patch_starts(int(i))) for i in clips]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    order = np.sort(clips)
    cum = np.concatenate([[0], np.cumsum(counts[order])])  # first patch of each clip of ``order``
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    # in groups of whole batches (the batches of one pass over all the patches), about TEACHER_GROUP_PATCHES
    # patches at a time: the training set's patches are never all in memory
    group = max(1, TEACHER_GROUP_PATCHES // batch_size) * batch_size
    with torch.inference_mode():
        for a in range(0, int(cum[-1]), group):
            b = min(int(cum[-1]), a + group)
            c0, c1 = int(np.searchsorted(cum, a, side="right") - 1), int(np.searchsorted(cum, b, side="left"))
            x, _ = features.patches(order[c0:c1])
            x = norm.apply(x[a - cum[c0]:b - cum[c0]])
            for s in range(0, len(x), batch_size):
                outs.append(model(torch.from_numpy(x[s:s + batch_size]).to(device)).float().cpu().numpy())
    model.train(was_training)
    fe = features.layout.frontend
    hop_s = features.layout.patch_hop_frames * fe.hop_samples / fe.sample_rate_hz
    return TeacherLogits([_MemberLogits(offsets=offsets, hop_s=hop_s, logits=np.concatenate(outs))])
