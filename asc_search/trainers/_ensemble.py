"""Post-search ensembles: greedy forward selection of trained candidates under the device budget.

Caruana et al. (2004), "Ensemble selection from libraries of models": start from the best single model and
add, one at a time, the library model that most improves the validation metric. Here the library is the
search's completed trials, members are added without replacement, and every member counts against the
budget: the DCASE rule sums the INT8 parameter bytes and the MACs of all members (Task 1, 2022). The
members' clip probabilities are fused by the mean, by the PROD rule of the Mel/Gammatone/CQT ensemble
(Pham et al. 2021, eq. 3) or by their geometric mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import softmax

from asc_search._errors import UserInputError
from asc_search.constraints import Budget
from asc_search.trainers._metrics import classification_metrics, full_metrics

log = logging.getLogger(__name__)

FUSIONS = ("mean", "prod", "geometric")
"""Fusion rules ``fuse`` knows."""

_EPS = 1e-7
"""Probability floor: of the log in PROD / geometric fusion and of the log loss (as ``classification_metrics``)."""


@dataclass(frozen=True, eq=False)
class EnsembleCandidate:
    """A trained trial that may join an ensemble.

    Args:
        trial_id: The trial's id.
        int8_bytes: Parameter memory at INT8 (bytes, as counted by ``count_complexity``).
        macs: MACs to classify 1 s of audio (as counted, all patches).
        val_probs: Clip-level float validation probabilities, shape ``(n_val, K)``, validation clips in the
            order of ``np.flatnonzero(data.is_validation)``.
        params: Parameters (batch-norm folded), or None when unknown (then a budget with ``max_params``
            cannot be checked).
        checkpoint: Folder of the trial's checkpoint (``model.pt``), or None.
    """

    trial_id: str
    int8_bytes: int
    macs: int
    val_probs: np.ndarray = field(repr=False)
    params: int | None = None
    checkpoint: str | None = None


@dataclass(frozen=True)
class EnsembleSelection:
    """The result of ``select_ensemble``.

    Attributes:
        members: Trial ids in the order they were added (empty when nothing could be selected).
        fusion: The chosen fusion rule (one of ``FUSIONS``), or None without members.
        int8_bytes: Summed INT8 parameter bytes of the members.
        macs: Summed MACs per 1 s of the members.
        params: Summed parameters, or None when a member's is unknown.
        val_metrics: ``full_metrics`` of the fused validation probabilities, or None without members.
        best_single: ``{"trial_id", "int8_bytes", "macs", "val_metrics"}`` of the best single model that fits
            the budget, or None.
        trace: The greedy steps of the chosen fusion: ``{"step", "added", "members", "accuracy", "log_loss",
            "int8_bytes", "macs", "candidates_in_budget"}``; the last entry has ``"stopped"`` (why).
        per_fusion: Per fusion rule tried: ``{"members", "accuracy", "log_loss", "int8_bytes", "macs"}``.
        budget: Name of the budget.
        reason: Why the selection is empty or how it ended (one line).
    """

    members: tuple[str, ...]
    fusion: str | None
    int8_bytes: int
    macs: int
    params: int | None
    val_metrics: dict | None
    best_single: dict | None
    trace: tuple[dict, ...]
    per_fusion: dict
    budget: str
    reason: str

    @property
    def is_ensemble(self) -> bool:
        """True when more than one model was selected (one member is the best single model itself)."""
        return len(self.members) > 1

    def as_row(self, trial_id: str = "ensemble") -> dict:
        """A ``trials.csv``-like row of the ensemble for the Pareto candidates (empty dict without members).

        Keys: ``trial_id``, ``status`` ("completed"), ``kind`` ("ensemble"), ``summary``, ``members``, ``fusion``,
        ``int8_bytes`` and ``macs`` (summed), ``params`` (summed or ""), ``best_val_accuracy``,
        ``best_val_log_loss``, ``best_val_uar`` (of the fused validation probabilities).
        """
        if not self.members:
            return {}
        m = self.val_metrics or {}
        return {"trial_id": trial_id, "status": "completed", "kind": "ensemble",
                "summary": f"ensemble ({self.fusion}): " + " + ".join(self.members), "members": list(self.members),
                "fusion": self.fusion, "int8_bytes": self.int8_bytes, "macs": self.macs,
                "params": "" if self.params is None else self.params, "best_val_accuracy": m.get("accuracy"),
                "best_val_log_loss": m.get("log_loss"), "best_val_uar": m.get("uar")}

    def to_dict(self) -> dict:
        """JSON-ready form (``fusion.json``, ``validation.json``)."""
        return {"members": list(self.members), "fusion": self.fusion, "int8_bytes": self.int8_bytes,
                "macs": self.macs, "params": self.params, "val_metrics": self.val_metrics,
                "best_single": self.best_single, "trace": list(self.trace), "per_fusion": self.per_fusion,
                "budget": self.budget, "reason": self.reason}


def fuse(probs_list: Sequence[np.ndarray], rule: str) -> np.ndarray:
    """Fuse the clip probabilities of ensemble members.

    ``mean``: the average of the members' probabilities. ``prod``: the PROD rule of Pham et al. (2021, eq. 3),
    the product of the members' probabilities renormalised over the classes, computed in log space
    (``softmax(sum_m log p_m)``). ``geometric``: the geometric mean renormalised (``softmax(mean_m log p_m)``);
    it ranks the classes as PROD does but is less sharp. Probabilities are floored at 1e-7 before the log.

    Args:
        probs_list: One array a member, each of shape ``(n, K)``, rows summing to 1.
        rule: One of ``FUSIONS``.

    Returns:
        Fused probabilities, shape ``(n, K)``, float64, rows summing to 1.

    Raises:
        UserInputError: An unknown rule, no members, or members of different shapes.
    """
    if rule not in FUSIONS:
        raise UserInputError(f"fusion rule must be one of {FUSIONS}, got {rule!r}")
    if len(probs_list) == 0:
        raise UserInputError("fuse: no member probabilities to fuse")
    shapes = {np.shape(p) for p in probs_list}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise UserInputError(f"fuse: members must all be (n, K) arrays of one shape, got "
                             f"{[np.shape(p) for p in probs_list]}")
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs_list])
    if rule == "mean":
        return stack.mean(axis=0)
    logs = np.log(np.clip(stack, _EPS, 1.0))
    return softmax(logs.sum(axis=0) if rule == "prod" else logs.mean(axis=0), axis=1)


def select_ensemble(candidates: Sequence, y_val: np.ndarray, budget: Budget | None, *,
                    max_members: int | None = None, fusions: Sequence[str] = FUSIONS,
                    class_names: Sequence[str] | None = None, groups: Sequence[str] | None = None,
                    n_bootstrap: int = 1000, seed: int = 0) -> EnsembleSelection:
    """Greedy forward ensemble selection without replacement under a budget (Caruana et al. 2004).

    For each fusion rule: start from the most accurate single candidate that fits the budget (ties: lower log
    loss, then fewer MACs, then trial id); then repeatedly add the candidate that gives the highest fused
    validation accuracy (ties: lower log loss, then fewer MACs), among those whose addition keeps the SUMMED
    INT8 bytes, MACs (and parameters and estimated latency, where the budget limits them) of all members within
    the budget; stop when no addition raises the accuracy, when none fits, or at ``max_members``. The fusion
    rule whose ensemble has the highest validation accuracy (then lower log loss, then fewer MACs, then the
    order of ``fusions``) is chosen.

    Args:
        candidates: ``EnsembleCandidate``s, or objects / dicts with ``trial_id``, ``int8_bytes``, ``macs``,
            ``val_probs`` (shape ``(n_val, K)``) and optionally ``params``, ``checkpoint``.
        y_val: Validation labels, shape ``(n_val,)``, values in ``[0, K)``.
        budget: The device budget (``max_int8_bytes``, ``max_macs``, ``max_params``, ``max_latency_ms``; None
            limits are unlimited), or None for no limit at all.
        max_members: Most members (None: no limit other than the budget).
        fusions: Fusion rules to try (subset of ``FUSIONS``).
        class_names: ``K`` class names for the metrics (default ``"0" ... "K-1"``).
        groups: Device of each validation clip, for per-device accuracy (optional).
        n_bootstrap: Bootstrap resamples of the confidence intervals in the metrics.
        seed: Seed of the bootstrap.

    Returns:
        The selection; without candidates, or when every candidate alone breaks the budget, it has no members
        and ``reason`` says why (no error is raised).

    Raises:
        UserInputError: Candidates whose probabilities do not match ``y_val`` / each other, an unknown fusion rule,
            ``max_members < 1``, or a budget that limits parameters while a candidate's are unknown.
    """
    y_val = np.asarray(y_val)
    if y_val.ndim != 1:
        raise UserInputError(f"select_ensemble: y_val must be 1-D, got shape {y_val.shape}")
    if max_members is not None and max_members < 1:
        raise UserInputError(f"select_ensemble: max_members must be >= 1 or None, got {max_members}")
    fusions = tuple(fusions)
    if not fusions or any(f not in FUSIONS for f in fusions):
        raise UserInputError(f"select_ensemble: fusions must be a non-empty subset of {FUSIONS}, got {fusions}")
    cands = [_as_candidate(c) for c in candidates]
    budget_name = budget.name if budget is not None else "none"
    if not cands:
        return _empty("no candidates: no trial completed with validation probabilities", budget_name)
    k = cands[0].val_probs.shape[1] if cands[0].val_probs.ndim == 2 else -1
    for c in cands:
        if c.val_probs.shape != (len(y_val), k):
            raise UserInputError(f"select_ensemble: candidate {c.trial_id} has val_probs of shape "
                                 f"{c.val_probs.shape}; expected ({len(y_val)}, {k}) like y_val and the first "
                                 f"candidate")
    if len(y_val) == 0:
        return _empty("no validation clips to select on", budget_name)
    if y_val.min() < 0 or y_val.max() >= k:
        raise UserInputError(f"select_ensemble: y_val must be in [0, {k}), got [{y_val.min()}, {y_val.max()}]")
    if budget is not None and budget.max_params is not None:
        unknown = [c.trial_id for c in cands if c.params is None]
        if unknown:
            raise UserInputError(f"select_ensemble: budget {budget.name!r} limits params but candidates {unknown} "
                                 f"have no params")
    ids = [c.trial_id for c in cands]
    if len(set(ids)) != len(ids):
        raise UserInputError(f"select_ensemble: trial ids must be unique, got duplicates "
                             f"{sorted({i for i in ids if ids.count(i) > 1})}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]

    fits_alone, over = [], []
    for c in cands:
        why = _breaks(budget, [c])
        if why:
            over.append(f"{c.trial_id} ({why})")
        else:
            fits_alone.append(c)
    if not fits_alone:
        return _empty(f"every candidate alone breaks budget {budget_name!r}: " + "; ".join(over[:5])
                      + (f"; ... {len(over) - 5} more" if len(over) > 5 else ""), budget_name)

    scored = [(c, *_acc_logloss(y_val, c.val_probs)) for c in fits_alone]
    best = min(scored, key=lambda s: (-s[1], s[2], s[0].macs, s[0].trial_id))[0]
    runs = {rule: _greedy(rule, best, fits_alone, y_val, budget, max_members) for rule in fusions}
    rule = min(fusions, key=lambda r: (-runs[r]["accuracy"], runs[r]["log_loss"], runs[r]["macs"],
                                       fusions.index(r)))
    chosen = runs[rule]
    members = list(chosen["members"])
    by_id = {c.trial_id: c for c in fits_alone}
    fused = fuse([by_id[m].val_probs for m in members], rule)
    metrics = full_metrics(y_val, fused, class_names=names, groups=groups, n_bootstrap=n_bootstrap, seed=seed)
    single = full_metrics(y_val, best.val_probs, class_names=names, groups=groups, n_bootstrap=n_bootstrap,
                          seed=seed)
    params = _sum_params([by_id[m] for m in members])
    reason = (f"{len(members)} member(s), {rule} fusion: {chosen['trace'][-1]['stopped']}"
              + (f"; {len(over)} candidate(s) alone over budget" if over else ""))
    log.info("ensemble selection: %s; accuracy %.4f (best single %s %.4f)", reason, metrics["accuracy"],
             best.trial_id, single["accuracy"])
    return EnsembleSelection(
        members=tuple(members), fusion=rule, int8_bytes=int(sum(by_id[m].int8_bytes for m in members)),
        macs=int(sum(by_id[m].macs for m in members)), params=params, val_metrics=metrics,
        best_single={"trial_id": best.trial_id, "int8_bytes": int(best.int8_bytes), "macs": int(best.macs),
                     "val_metrics": single},
        trace=tuple(chosen["trace"]),
        per_fusion={r: {key: runs[r][key] for key in ("members", "accuracy", "log_loss", "int8_bytes", "macs")}
                    for r in fusions},
        budget=budget_name, reason=reason,
    )


def ensemble_candidates_from_rows(rows: Sequence[dict], n_classes: int, *,
                                  probs_file: str) -> list[EnsembleCandidate]:
    """Ensemble candidates from ``trials.csv`` rows: completed trials whose checkpoint carries ``probs_file``.

    Rows may come from memory (numbers) or from the CSV (strings). A completed row without a checkpoint, without
    the probabilities file, or with probabilities of the wrong shape is skipped with a warning.

    Args:
        rows: Trial rows with ``trial_id``, ``status``, ``int8_bytes``, ``macs``, optional ``params`` and the
            private ``_checkpoint`` folder.
        n_classes: ``K``; the probabilities must be ``(n_val, K)``.
        probs_file: Name of the clip-level validation probabilities in the checkpoint folder.

    Returns:
        One ``EnsembleCandidate`` a usable row, in row order.
    """
    out = []
    for r in rows:
        if r.get("status") != "completed":
            continue
        folder = r.get("_checkpoint")
        path = Path(folder) / probs_file if folder else None
        if path is None or not path.is_file():
            log.warning("ensemble: trial %s has no %s in its checkpoint (%s); left out", r.get("trial_id"),
                        probs_file, folder)
            continue
        probs = np.load(path)
        if probs.ndim != 2 or probs.shape[1] != n_classes:
            log.warning("ensemble: trial %s: %s has shape %s, expected (n_val, %d); left out", r.get("trial_id"),
                        path, probs.shape, n_classes)
            continue
        params = r.get("params")
        out.append(EnsembleCandidate(trial_id=str(r["trial_id"]), int8_bytes=int(float(r["int8_bytes"])),
                                     macs=int(float(r["macs"])), val_probs=probs,
                                     params=int(float(params)) if params not in (None, "") else None,
                                     checkpoint=str(folder)))
    return out


def _greedy(rule: str, start: EnsembleCandidate, pool: list[EnsembleCandidate], y: np.ndarray,
            budget: Budget | None, max_members: int | None) -> dict:
    """One greedy forward selection with one fusion rule (each trial addition fused by ``fuse``)."""
    members = [start]
    acc, loss = _acc_logloss(y, start.val_probs)
    trace = [{"step": 0, "added": start.trial_id, "members": [start.trial_id], "accuracy": acc, "log_loss": loss,
              "int8_bytes": int(start.int8_bytes), "macs": int(start.macs), "candidates_in_budget": None}]
    stopped = "all candidates are members"
    while True:
        if max_members is not None and len(members) >= max_members:
            stopped = f"max_members {max_members} reached"
            break
        taken = {m.trial_id for m in members}
        rest = [c for c in pool if c.trial_id not in taken]
        if not rest:
            stopped = "all candidates are members"
            break
        fitting = [c for c in rest if not _breaks(budget, members + [c])]
        if not fitting:
            stopped = "no further candidate fits the budget"
            break
        best = None
        for c in fitting:
            a, lo = _acc_logloss(y, fuse([x.val_probs for x in members] + [c.val_probs], rule))
            key = (-a, lo, c.macs, c.trial_id)
            if best is None or key < best[0]:
                best = (key, c, a, lo)
        _, c, a, lo = best
        if a <= acc:
            stopped = (f"no addition raises validation accuracy above {acc:.4f} (best: {c.trial_id}, "
                       f"{a:.4f})")
            break
        members.append(c)
        acc, loss = a, lo
        trace.append({"step": len(members) - 1, "added": c.trial_id, "members": [x.trial_id for x in members],
                      "accuracy": acc, "log_loss": loss, "int8_bytes": int(sum(x.int8_bytes for x in members)),
                      "macs": int(sum(x.macs for x in members)), "candidates_in_budget": len(fitting)})
    trace[-1] = {**trace[-1], "stopped": stopped}
    return {"members": [x.trial_id for x in members], "accuracy": acc, "log_loss": loss,
            "int8_bytes": int(sum(x.int8_bytes for x in members)), "macs": int(sum(x.macs for x in members)),
            "trace": trace}


def _breaks(budget: Budget | None, members: list[EnsembleCandidate]) -> str:
    """Why the summed cost of ``members`` breaks ``budget`` ('' when it fits)."""
    if budget is None:
        return ""
    nbytes = sum(int(m.int8_bytes) for m in members)
    macs = sum(int(m.macs) for m in members)
    reasons = []
    if budget.max_int8_bytes is not None and nbytes > budget.max_int8_bytes:
        reasons.append(f"int8_bytes {nbytes:,} > {budget.max_int8_bytes:,}")
    if budget.max_macs is not None and macs > budget.max_macs:
        reasons.append(f"macs {macs:,} > {budget.max_macs:,}")
    if budget.max_params is not None:
        params = _sum_params(members)
        if params is None or params > budget.max_params:
            reasons.append(f"params {params} > {budget.max_params:,}")
    latency = budget.latency_ms(macs)
    if latency is not None and latency > budget.max_latency_ms:
        reasons.append(f"estimated latency {latency:.0f} ms > {budget.max_latency_ms:g} ms")
    return ", ".join(reasons)


def _sum_params(members: list[EnsembleCandidate]) -> int | None:
    if any(m.params is None for m in members):
        return None
    return int(sum(m.params for m in members))


def _acc_logloss(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Accuracy and log loss by the training loop's convention (``classification_metrics``)."""
    m = classification_metrics(y, probs)
    return m["accuracy"], m["log_loss"]


def _as_candidate(c) -> EnsembleCandidate:
    if isinstance(c, EnsembleCandidate):
        return c
    get = c.get if isinstance(c, dict) else (lambda key, default=None: getattr(c, key, default))
    missing = [key for key in ("trial_id", "int8_bytes", "macs", "val_probs") if get(key) is None]
    if missing:
        raise UserInputError(f"select_ensemble: a candidate lacks {missing}; each needs trial_id, int8_bytes, "
                             f"macs and val_probs (n_val, K)")
    params = get("params")
    return EnsembleCandidate(trial_id=str(get("trial_id")), int8_bytes=int(get("int8_bytes")),
                             macs=int(get("macs")), val_probs=np.asarray(get("val_probs")),
                             params=None if params in (None, "") else int(params),
                             checkpoint=get("checkpoint"))


def _empty(reason: str, budget_name: str) -> EnsembleSelection:
    log.warning("ensemble selection: %s", reason)
    return EnsembleSelection(members=(), fusion=None, int8_bytes=0, macs=0, params=None, val_metrics=None,
                             best_single=None, trace=(), per_fusion={}, budget=budget_name, reason=reason)


__all__ = ["FUSIONS", "EnsembleCandidate", "EnsembleSelection", "ensemble_candidates_from_rows", "fuse",
           "select_ensemble"]
