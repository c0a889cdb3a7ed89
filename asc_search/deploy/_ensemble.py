"""Export a selected ensemble: its members' INT8 models, the fusion recipe and the ensemble's validation."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asc_search._errors import AscSearchError, UserInputError
from asc_search._io import write_json
from asc_search.constraints import Budget
from asc_search.deploy._limits import check_limits, ensemble_measured, passes
from asc_search.rundir import ENSEMBLE_ID, LABELS_FILE, MODELS_DIR, VALIDATION_FILE, model_dir
from asc_search.trainers import FUSIONS, estimate_metrics, full_metrics, fuse

log = logging.getLogger(__name__)

"""Folder of the ensemble under ``run_dir/models/``, and its ``trial_id`` in ``trials.csv`` and the reports."""

MEMBER_FILES = ("validation.json", "model_int8.tflite", "val_probs_float.npy", "val_probs_int8.npy")
"""Files ``export_and_validate`` leaves in a member's folder that the ensemble export reads."""

HOW_TO_FUSE = {
    "member_clip_probability": "for each member, on its own front-end (its frontend.json) and its own patches of "
                               "the clip: de-quantise the INT8 output, softmax per patch, then the mean over that "
                               "member's patches",
    "mean": "p(c) = mean over members of p_m(c)",
    "prod": "p(c) = prod_m p_m(c) / sum_c' prod_m p_m(c'), computed as softmax(sum_m log max(p_m(c), 1e-7)) "
            "(PROD rule, Pham et al. 2021, eq. 3)",
    "geometric": "p(c) = softmax(mean_m log max(p_m(c), 1e-7)) (geometric mean, renormalised)",
    "prediction": "argmax_c p(c)",
}


def export_ensemble(run_dir: str | Path, selection, budget: Budget, *, y_val: np.ndarray | None = None,
                    class_names: Sequence[str] | None = None, groups: Sequence[str] | None = None,
                    n_bootstrap: int = 1000, seed: int = 0, test_devices: Sequence[str] | None = None,
                    seen_devices: set[str] | None = None) -> dict:
    """Write ``run_dir/models/ensemble/`` (``fusion.json``, ``validation.json``) for a selected ensemble.

    The ensemble is deployed member by member: each member is the single-model export in
    ``run_dir/models/<trial_id>/`` made by ``export_and_validate`` (which must have run: it leaves
    ``model_int8.tflite``, ``validation.json`` and the clip-level validation probabilities
    ``val_probs_float.npy`` / ``val_probs_int8.npy``, shape ``(n_val, K)``). Each member's clip probability is the
    mean of the softmax over its own patches; the members' clip probabilities are fused by the selection's rule
    (``asc_search.trainers.fuse``: mean, PROD of Pham et al. 2021 eq. 3, or geometric mean).

    ``validation.json`` holds the summed INT8 weight bytes, parameters and MACs per 1 s as counted on the
    members' .tflite graphs (the DCASE rule: all members count), a pass/fail line per budget limit from
    ``check_limits`` as the single-model validation has (peak RAM: the largest member arena, the members running
    one after another; ``ensemble_measured``),
    ``full_metrics`` of the INT8 and of the float ensemble, the clip-level argmax agreement of the fused INT8 and
    float predictions (at least ``MIN_INT8_AGREEMENT`` to pass) and ``deployable`` (every line passes).
    Where every member was scored on the test split (``test_probs_int8.npy``), ``test`` holds
    ``estimate_metrics`` of the fused INT8 and float test probabilities, by the same rule.

    Args:
        run_dir: The run directory.
        selection: An ``EnsembleSelection`` or its ``to_dict()`` (``members``, ``fusion``).
        budget: The device budget.
        y_val: Validation labels, shape ``(n_val,)``; default: the members' ``val_labels.npy``.
        class_names: ``K`` class names; default: the first member's ``labels.txt``, else ``"0" ... "K-1"``.
        groups: Device of each validation clip (per-device accuracy), length ``n_val``, optional.
        n_bootstrap: Bootstrap resamples of the metrics' confidence intervals.
        seed: Seed of the bootstrap.
        test_devices: Device of each test clip, optional (per-device test figures).
        seen_devices: Devices the members trained on (the seen / unseen split of the test figures).

    Returns:
        The validation dict (also written to ``validation.json``).

    Raises:
        UserInputError: The selection has no members or an unknown fusion rule.
        AscSearchError: A member's export is missing or failed, or the members' validation clips disagree.
    """
    run_dir = Path(run_dir)
    sel = selection.to_dict() if hasattr(selection, "to_dict") else dict(selection)
    members = [str(m) for m in sel.get("members") or []]
    rule = sel.get("fusion")
    if not members:
        raise UserInputError(f"export_ensemble: the selection has no members ({sel.get('reason', 'no reason')})")
    if rule not in FUSIONS:
        raise UserInputError(f"export_ensemble: fusion must be one of {FUSIONS}, got {rule!r}")
    folders = [run_dir / MODELS_DIR / m for m in members]
    missing = [f"{f.relative_to(run_dir)}/{name}" for f in folders for name in MEMBER_FILES
               if not (f / name).is_file()]
    if missing:
        raise AscSearchError(f"export_ensemble: member exports are incomplete, missing {missing}; export each member "
                             f"with export_and_validate first")
    vals = [json.loads((f / VALIDATION_FILE).read_text(encoding="utf-8")) for f in folders]
    failed = [m for m, v in zip(members, vals, strict=True) if "error" in v]
    if failed:
        raise AscSearchError(f"export_ensemble: the export of members {failed} failed; the ensemble cannot be "
                             f"deployed")
    f_probs = [np.load(f / "val_probs_float.npy") for f in folders]
    q_probs = [np.load(f / "val_probs_int8.npy") for f in folders]
    shapes = {p.shape for p in f_probs + q_probs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise AscSearchError(f"export_ensemble: members' validation probabilities differ in shape: {sorted(shapes)}")
    n_val, k = next(iter(shapes))
    y = _labels(folders, y_val, n_val)
    names = _class_names(folders[0], class_names, k)
    f_fused = fuse(f_probs, rule)
    q_fused = fuse(q_probs, rule)
    agreement = float(np.mean(f_fused.argmax(1) == q_fused.argmax(1)))

    def total(key: str) -> int | None:
        values = [v.get(key) for v in vals]
        return None if any(x is None for x in values) else int(sum(values))

    measured = ensemble_measured(vals, agreement)
    checks = check_limits(budget, measured)
    q_metrics = full_metrics(y, q_fused, class_names=names, groups=groups, n_bootstrap=n_bootstrap, seed=seed)
    f_metrics = full_metrics(y, f_fused, class_names=names, groups=groups, n_bootstrap=n_bootstrap, seed=seed)
    member_acc = {m: float(np.mean(p.argmax(1) == y)) for m, p in zip(members, q_probs, strict=True)}
    out_dir = model_dir(run_dir, ENSEMBLE_ID)
    report = {
        "trial_id": ENSEMBLE_ID, "kind": "ensemble", "members": members, "fusion": rule,
        "summary": f"ensemble of {len(members)} ({rule}): " + " + ".join(members),
        "member_folders": [str(f.relative_to(run_dir)) for f in folders],
        "file_bytes": total("file_bytes"), "int8_bytes_tflite": measured["int8_bytes"],
        "params_tflite": measured["params"], "macs_tflite": measured["macs"],
        "member_int8_bytes_tflite": {m: v.get("int8_bytes_tflite") for m, v in zip(members, vals, strict=True)},
        "member_macs_tflite": {m: v.get("macs_tflite") for m, v in zip(members, vals, strict=True)},
        "complexity_note": "INT8 weight bytes, parameters and MACs summed over the members' .tflite graphs "
                           "(all members count, as in DCASE Task 1)",
        "tflm_arena_bytes": measured["tflm_arena_bytes"],
        "tflm_arena_note": "the largest member arena: the members run one after another and share it",
        "latency_ms_litert_xnnpack": _sum_float(vals, "latency_ms_litert_xnnpack"),
        "latency_ms_litert_builtin": _sum_float(vals, "latency_ms_litert_builtin"),
        "latency_note": "sum of the members' host LiteRT latencies (members run one after another)",
        "validation_clips": int(n_val),
        "float": f_metrics, "int8": q_metrics,
        "int8_per_class_accuracy": q_metrics["per_class_accuracy"],
        "int8_per_device_accuracy": q_metrics["per_device_accuracy"] or {},
        "int8_float_agreement": agreement,
        "member_int8_accuracy": member_acc,
        "member_deployable": {m: bool(v.get("deployable")) for m, v in zip(members, vals, strict=True)},
        "selection": {key: sel.get(key) for key in ("members", "fusion", "int8_bytes", "macs", "val_metrics",
                                                    "best_single", "trace", "per_fusion", "reason")},
        "interpreter": "LiteRT (XNNPACK, 1 thread), per member; fused by the rule in fusion.json",
        "budget": budget.name, "limits": [c.to_dict() for c in checks], "deployable": passes(checks),
        # the members' refits (None for a member exported with the search's weights); with any, the figures on
        # the validation clips above come from models that trained on them
        "refit": ({m: v.get("refit") for m, v in zip(members, vals, strict=True)}
                  if any(v.get("refit") for v in vals) else None),
    }
    if all((f / "test_probs_int8.npy").is_file() for f in folders):
        y_test = np.load(folders[0] / "test_labels.npy")
        fused = {kind: fuse([np.load(f / f"test_probs_{kind}.npy") for f in folders], rule) for kind in ("int8", "float")}
        devices = list(test_devices) if test_devices is not None and any(test_devices) else None
        report["test"] = {
            "split": "test", "clips": int(len(y_test)),
            "model": "members " + ", ".join(sorted({str(v.get("test", {}).get("model")) for v in vals})),
            "int8": estimate_metrics(y_test, fused["int8"], class_names=names, devices=devices,
                                     seen_devices=seen_devices, n_bootstrap=n_bootstrap, seed=seed),
            "float": estimate_metrics(y_test, fused["float"], class_names=names, devices=devices,
                                      seen_devices=seen_devices, n_bootstrap=0)}
    fusion = {
        "kind": "ensemble", "fusion": rule, "labels": names,
        "members": [{"trial_id": m, "folder": str(f.relative_to(run_dir)),
                     "tflite": str((f / "model_int8.tflite").relative_to(run_dir)),
                     "frontend": str((f / "frontend.json").relative_to(run_dir))}
                    for m, f in zip(members, folders, strict=True)],
        "how_to_fuse": {"member_clip_probability": HOW_TO_FUSE["member_clip_probability"],
                        "rule": HOW_TO_FUSE[rule], "prediction": HOW_TO_FUSE["prediction"]},
        "paths": "relative to the run directory",
    }
    write_json(out_dir / "fusion.json", fusion)
    write_json(out_dir / VALIDATION_FILE, report)
    log.info("ensemble %s (%s): INT8 accuracy on validation %.4f%s, agreement %.3f, deployable %s", members, rule,
             q_metrics["accuracy"], " (members refit on it: a check, not an estimate)" if report["refit"] else "",
             agreement, report["deployable"])
    return report


def _labels(folders: list[Path], y_val: np.ndarray | None, n_val: int) -> np.ndarray:
    if y_val is not None:
        y = np.asarray(y_val)
    else:
        found = [np.load(f / "val_labels.npy") for f in folders if (f / "val_labels.npy").is_file()]
        if not found:
            raise AscSearchError("export_ensemble: no y_val given and no member has val_labels.npy")
        if any(not np.array_equal(found[0], other) for other in found[1:]):
            raise AscSearchError("export_ensemble: the members' val_labels.npy differ: they were validated on "
                                 "different clips")
        y = found[0]
    if y.shape != (n_val,):
        raise AscSearchError(f"export_ensemble: {y.shape} labels for {n_val} validation clips")
    return y.astype(np.int64)


def _class_names(folder: Path, class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is not None:
        names = [str(c) for c in class_names]
    elif (folder / LABELS_FILE).is_file():
        names = (folder / LABELS_FILE).read_text(encoding="utf-8").split("\n")
        names = [n for n in names if n]
    else:
        names = [str(i) for i in range(k)]
    if len(names) != k:
        raise AscSearchError(f"export_ensemble: {len(names)} class names for {k} probability columns")
    return names


def _sum_float(vals: list[dict], key: str) -> float | None:
    values = [v.get(key) for v in vals]
    return None if any(x is None for x in values) else round(float(sum(values)), 4)


__all__ = ["HOW_TO_FUSE", "MEMBER_FILES", "export_ensemble"]
