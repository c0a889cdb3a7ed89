"""Export the Pareto front: one folder a member with the INT8 model and its validation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from asc_search._errors import UserInputError
from asc_search._io import atomic_write, write_json, write_text
from asc_search.constraints import Budget, count_complexity, list_devices
from asc_search.data import DecodedDataset
from asc_search.deploy._deploy import ClipMeans, DeployFrontend, audio_patches, batched, softmax_rows
from asc_search.deploy._export import export_int8_tflite
from asc_search.deploy._limits import check_limits, passes
from asc_search.deploy._tflm import (
    TFLMError,
    litert_latency_ms,
    run_int8_tflm,
    tflm_arena_bytes,
    write_c_array,
)
from asc_search.deploy._validate import run_int8, tflite_complexity, xnnpack_prepares
from asc_search.frontends import FeatureCache
from asc_search.rundir import (
    LABELS_FILE,
    MODELS_DIR,
    VALIDATION_FILE,
    copy_checkpoint,
    load_checkpoint,
    run_cache_dir,
)
from asc_search.search_spaces import patch_layout
from asc_search.trainers import (
    classification_metrics,
    clip_probabilities,
    estimate_metrics,
    full_metrics,
    grouped_accuracy,
)

log = logging.getLogger(__name__)

CALIBRATION_PATCHES = 512

VALIDATION_GROUP_CLIPS = 256
"""Validation clips whose audio ``export_and_validate`` reads and cuts into patches at once. Memory then holds
one group's patches (and their features) plus fewer than ``PATCH_BATCH`` patches carried to the next group,
the first ``TFLM_MAX_PATCHES`` patches' clips for the TFLite-Micro check, and ``(n_val, n_classes)`` clip sums,
whatever the size of the validation split (TAU22: 29,680 clips). The figures do not depend on it."""

PATCH_BATCH = 256
"""Patches a PyTorch forward pass takes at once (front-end and float model, ``batched``). Validation cuts its
patches into these batches in the order of all validation patches, as one pass over every clip would, so that
a batch's float results (which can depend on the batch's size and contents in the last bits) do not change
with ``VALIDATION_GROUP_CLIPS``."""


def choose_exports(front: list[dict], max_export: int) -> list[dict]:
    """Front members to export: all when they fit ``max_export``, else the most accurate one plus
    members evenly spread along MACs."""
    if len(front) <= max_export:
        return list(front)
    if max_export == 0:
        return []
    best = max(front, key=lambda r: r["best_val_accuracy"])
    by_macs = sorted(front, key=lambda r: r["macs"])
    picks = {best["trial_id"]: best}
    for i in np.linspace(0, len(by_macs) - 1, max_export).round().astype(int):
        if len(picks) >= max_export:
            break
        picks.setdefault(by_macs[int(i)]["trial_id"], by_macs[int(i)])
    return sorted(picks.values(), key=lambda r: r["macs"])


def export_and_validate(model_pt: Path, data_by_rate: dict[int, DecodedDataset], cache: FeatureCache,
                        budget: Budget, *, search_model_pt: Path | None = None) -> dict:
    """Export one trained candidate to INT8 TFLite beside ``model_pt`` and validate it.

    Validation: weight bytes and MACs counted on the .tflite graph against the genome's; clip-level
    accuracy, log loss and UAR of the INT8 model (LiteRT, XNNPACK, 1 thread) and of the float model on
    the validation split; agreement of their clip argmax, also with LiteRT's builtin kernels and with
    TFLite-Micro (on the first ``TFLM_MAX_PATCHES`` patches' clips); the TFLite-Micro arena (bytes); host
    latency in LiteRT with XNNPACK and builtin kernels; the model as a C array (``model_data.h/.cc``); a pass/fail
    line per budget limit and for the agreement (at least ``MIN_INT8_AGREEMENT``), from ``check_limits`` on the
    figures counted on the .tflite graph and the TFLite-Micro arena; a model that fails any line is not
    ``deployable``. The clip-level validation probabilities of the float and the INT8
    model (``val_probs_float.npy``, ``val_probs_int8.npy``: ``(n_val, K)`` float32, clips in the order of
    ``np.flatnonzero(data.is_validation)``) and their labels (``val_labels.npy``) are saved beside it for
    ``export_ensemble``.

    Test: where the data has a test split, the INT8 and the float model are scored on it, once, here (nothing
    before the export reads a test clip): ``test`` holds ``estimate_metrics`` of both (accuracy, log loss, UAR,
    per class, per device with the devices seen in training apart, 95 % bootstrap intervals), and
    ``test_probs_int8.npy`` / ``test_probs_float.npy`` / ``test_labels.npy`` (clips in the order of
    ``np.flatnonzero(data.is_test)``) are saved for ``export_ensemble``. With ``search_model_pt`` (the search's
    checkpoint of a refit model), ``test["search_model_float"]`` holds the float figures of the search's own
    weights.
    After a refit, the model has trained on the validation clips: its validation figures here check the export
    (INT8 against float), they are not an estimate.

    Memory: the validation clips are read ``VALIDATION_GROUP_CLIPS`` at a time and their patches validated
    batch by batch (``PATCH_BATCH``), so no step holds the audio, features or patch outputs of the whole split;
    the figures are the same whatever the group size.

    Returns:
        The validation dict (also written to ``validation.json``).

    Raises:
        ExportError: The conversion failed.
        UserInputError: The data set has no validation clips.
    """
    ckpt = load_checkpoint(model_pt)
    genome, norm, model = ckpt.genome, ckpt.normalisation, ckpt.build_model()
    data = data_by_rate[genome.frontend.sample_rate_hz]
    layout = patch_layout(genome)
    features, _ = cache.get(data, layout)
    train = np.flatnonzero(data.is_train)
    val = np.flatnonzero(data.is_validation)
    if not len(val):
        raise UserInputError(f"{model_pt}: the data set has no validation clips to validate the export on")
    rng = np.random.default_rng(0)
    calib_clips = np.sort(rng.permutation(train)[:CALIBRATION_PATCHES])  # patches of a clip subset only
    x_train, _ = features.patches(calib_clips)
    calib = norm.apply(x_train[rng.permutation(len(x_train))[:CALIBRATION_PATCHES]])
    out_dir = model_pt.parent
    tflite_path = out_dir / "model_int8.tflite"
    t0 = time.time()
    export_int8_tflite(model, calib, tflite_path)
    export_s = time.time() - t0
    # validation features from the raw audio through the deployable float front-end (float32, as on the device
    # and as 'asc-search validate' computes them), not from the float16 training cache; VALIDATION_GROUP_CLIPS
    # clips at a time, so that no step holds the whole split
    frontend = DeployFrontend(layout.frontend, list(norm.mean_db), list(norm.std_db)).eval()
    n_classes = ckpt.n_classes
    f_sum, q_sum, b_sum = (ClipMeans(len(val), n_classes) for _ in range(3))
    n_patches = float_int8_same = xnnpack_builtin_same = 0
    tflm_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (features, owner, float probs)
    for chunks, owner in _validation_patches(data.waveforms, val, chunk_samples=layout.chunk_samples,
                                             hop_samples=layout.patch_hop_samples):
        x = batched(frontend, chunks, batch=PATCH_BATCH)
        float_probs = batched(model, x, batch=PATCH_BATCH, softmax=True)
        int8_probs = softmax_rows(run_int8(tflite_path, x, xnnpack=True))
        builtin_probs = softmax_rows(run_int8(tflite_path, x, xnnpack=False))
        f_sum.add(float_probs, owner)
        q_sum.add(int8_probs, owner)
        b_sum.add(builtin_probs, owner)
        n_patches += len(x)
        float_int8_same += int((float_probs.argmax(1) == int8_probs.argmax(1)).sum())
        xnnpack_builtin_same += int((int8_probs.argmax(1) == builtin_probs.argmax(1)).sum())
        if not _holds_tflm_clips(tflm_parts):
            tflm_parts.append((x, owner, float_probs))
    y = data.labels[val]
    f_clip, q_clip, b_clip = f_sum.means(), q_sum.means(), b_sum.means()
    genome_c = count_complexity(genome, n_classes=ckpt.n_classes)
    tfl = tflite_complexity(tflite_path)
    macs_tflite = tfl.macs_per_patch * genome_c.patches_per_second
    agreement = float((f_clip.argmax(1) == q_clip.argmax(1)).mean())
    tflm_x, tflm_owner, tflm_float = (np.concatenate(part) for part in zip(*tflm_parts, strict=True))
    tflm = _tflm_check(tflite_path, tflm_x, tflm_owner, f_clip, tflm_float)
    params_tflite = tfl.int8_weights + tfl.int32_biases
    checks = check_limits(budget, {"int8_bytes": tfl.weight_bytes, "params": params_tflite, "macs": macs_tflite,
                                   "tflm_arena_bytes": tflm.get("tflm_arena_bytes"),
                                   "int8_float_agreement": agreement})
    report = {
        "trial_id": out_dir.name, "genome_id": genome.genome_id, "summary": genome.summary(),
        "tflite": str(tflite_path.name), "file_bytes": tfl.file_bytes,
        "int8_bytes_tflite": tfl.weight_bytes, "int8_bytes_genome": genome_c.int8_bytes,
        "macs_tflite": macs_tflite, "macs_genome": genome_c.macs,
        "macs_tflite_over_genome": round(macs_tflite / genome_c.macs, 6) if genome_c.macs else None,
        "params_tflite": params_tflite, "params_genome": genome_c.params,
        "peak_activation_bytes_genome": genome_c.peak_activation_bytes, "nessi_macs_genome": genome_c.nessi_macs,
        "int8_weights": tfl.int8_weights, "int32_biases": tfl.int32_biases,
        "validation_clips": int(len(val)), "validation_patches": n_patches,
        "float": classification_metrics(y, f_clip), "int8": classification_metrics(y, q_clip),
        # macro-F1, confusion matrix, per-class / per-device accuracy, 95 % bootstrap CIs of accuracy and UAR
        "int8_full_metrics": full_metrics(y, q_clip, class_names=list(ckpt.class_names),
                                          groups=[data.devices[i] for i in val] if any(data.devices) else None),
        "int8_per_class_accuracy": grouped_accuracy(y, q_clip.argmax(1), [ckpt.class_names[i] for i in y]),
        "int8_per_device_accuracy": grouped_accuracy(y, q_clip.argmax(1), [data.devices[i] for i in val]),
        "int8_float_agreement": agreement,
        "int8_float_patch_agreement": float_int8_same / n_patches,
        "int8_builtin_float_agreement": float((f_clip.argmax(1) == b_clip.argmax(1)).mean()),
        "int8_xnnpack_builtin_patch_agreement": xnnpack_builtin_same / n_patches,
        "xnnpack_prepares": xnnpack_prepares(tflite_path),
        **tflm,
        "latency_ms_litert_xnnpack": round(litert_latency_ms(tflite_path, xnnpack=True), 4),
        "latency_ms_litert_builtin": round(litert_latency_ms(tflite_path, xnnpack=False), 4),
        "latency_note": "host CPU, LiteRT, 1 thread, median of 50 runs after 5 warm-up runs",
        "estimated_device_latency_ms_per_1s": {d.name: round(d.estimate_latency_ms(macs_tflite), 3)
                                               for d in list_devices()},
        "device_latency_model": "MACs / calibrated MAC throughput of the device profile (see asc-search budgets)",
        "interpreter": "LiteRT (XNNPACK, 1 thread)", "export_s": round(export_s, 2),
        "budget": budget.name, "limits": [c.to_dict() for c in checks], "deployable": passes(checks),
        "refit": ckpt.metrics.get("refit"),
    }
    test = np.flatnonzero(data.is_test)
    if len(test):
        report["test"] = _test_figures(data, test, layout, frontend, model, tflite_path, ckpt, out_dir,
                                       search_model_pt=search_model_pt)
    # clip-level validation probabilities (n_val, K), clips in the order of np.flatnonzero(data.is_validation):
    # export_ensemble fuses the members' from these
    write_npy(out_dir / "val_probs_float.npy", f_clip.astype(np.float32))
    write_npy(out_dir / "val_probs_int8.npy", q_clip.astype(np.float32))
    write_npy(out_dir / "val_labels.npy", np.asarray(y, dtype=np.int64))
    write_json(out_dir / VALIDATION_FILE, report)
    write_text(out_dir / LABELS_FILE, "\n".join(ckpt.class_names) + "\n")
    write_c_array(tflite_path, out_dir)
    write_json(out_dir / "frontend.json", {"frontend": layout.frontend.to_json(), "chunk_s": layout.chunk_s,
                                           "patch_frames": layout.patch_frames,
                                           "patch_hop_frames": layout.patch_hop_frames,
                                           "normalisation": norm.to_dict(),
                                           "model_input": "int8 [1, n_bins, patch_frames, 1 + deltas] = quantise("
                                                          "(features with deltas - mean_db[c]) / std_db[c])"})
    return report


def _test_figures(data: DecodedDataset, test: np.ndarray, layout, frontend: DeployFrontend, model, tflite_path: Path,
                  ckpt, out_dir: Path, *, search_model_pt: Path | None) -> dict:
    """Score the exported model (INT8 in LiteRT with XNNPACK, and float) on the test clips ``test`` through the
    deployable float front-end; write their clip probabilities; return the ``test`` section of
    ``validation.json``."""
    refit = ckpt.metrics.get("refit")
    trained_on = data.is_train | data.is_validation if refit else data.is_train
    seen = {data.devices[int(i)] for i in np.flatnonzero(trained_on)} if any(data.devices) else None
    search = None
    if search_model_pt is not None:
        s_ckpt = load_checkpoint(search_model_pt)
        s_norm = s_ckpt.normalisation
        search = (DeployFrontend(layout.frontend, list(s_norm.mean_db), list(s_norm.std_db)).eval(),
                  s_ckpt.build_model())
    f_sum, q_sum = ClipMeans(len(test), ckpt.n_classes), ClipMeans(len(test), ckpt.n_classes)
    s_sum = ClipMeans(len(test), ckpt.n_classes) if search else None
    for chunks, owner in _validation_patches(data.waveforms, test, chunk_samples=layout.chunk_samples,
                                             hop_samples=layout.patch_hop_samples):
        x = batched(frontend, chunks, batch=PATCH_BATCH)
        f_sum.add(batched(model, x, batch=PATCH_BATCH, softmax=True), owner)
        q_sum.add(softmax_rows(run_int8(tflite_path, x, xnnpack=True)), owner)
        if search:
            s_sum.add(batched(search[1], batched(search[0], chunks, batch=PATCH_BATCH), batch=PATCH_BATCH,
                              softmax=True), owner)
    y = data.labels[test]
    devices = [data.devices[int(i)] for i in test] if any(data.devices) else None
    names = list(ckpt.class_names)
    f_clip, q_clip = f_sum.means(), q_sum.means()
    write_npy(out_dir / "test_probs_float.npy", f_clip.astype(np.float32))
    write_npy(out_dir / "test_probs_int8.npy", q_clip.astype(np.float32))
    write_npy(out_dir / "test_labels.npy", np.asarray(y, dtype=np.int64))
    out = {"split": "test", "clips": int(len(test)), "model": "refit on train + validation" if refit else
           "the search's weights (trained on train)",
           "int8": estimate_metrics(y, q_clip, class_names=names, devices=devices, seen_devices=seen),
           "float": estimate_metrics(y, f_clip, class_names=names, devices=devices, seen_devices=seen, n_bootstrap=0)}
    if s_sum is not None:
        out["search_model_float"] = estimate_metrics(y, s_sum.means(), class_names=names, devices=devices,
                                                     seen_devices=seen, n_bootstrap=0)
    return out


def write_npy(path: Path, array: np.ndarray) -> Path:
    """Atomically write ``array`` as a ``.npy`` file (a temporary name, then ``os.replace``)."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
            np.save(f, array)

    return atomic_write(path, save)


TFLM_MAX_PATCHES = 400


def _validation_patches(waveforms: Sequence[np.ndarray], val: np.ndarray, *, chunk_samples: int, hop_samples: int,
                        group_clips: int | None = None,
                        batch: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The raw audio patches of the clips ``waveforms[val]``, in order, in blocks of whole batches.

    The clips are read ``group_clips`` (default ``VALIDATION_GROUP_CLIPS``) at a time and cut by
    ``audio_patches``. Every block but the last holds a multiple of ``batch`` (default ``PATCH_BATCH``) patches;
    the patches past a group's last whole batch are carried into the next block, so the blocks cut the sequence
    of all validation patches into the same batches whatever ``group_clips`` is. A clip's patches may span two
    blocks.

    Args:
        waveforms: Clip audio, ``(samples,)`` float32 each (a store-backed dataset reads a clip on indexing).
        val: Positions of the validation clips in ``waveforms``, shape ``(n_val,)``, ``n_val >= 1``.
        chunk_samples: Patch length (samples).
        hop_samples: Patch hop (samples).
        group_clips: Clips read at once (>= 1).
        batch: Patches of a forward pass (>= 1).

    Yields:
        ``(chunks (n, chunk_samples) float32, owner (n,) int64)``: ``owner`` is the position in ``val`` of each
        patch's clip.
    """
    group_clips = VALIDATION_GROUP_CLIPS if group_clips is None else group_clips
    batch = PATCH_BATCH if batch is None else batch
    held_chunks = np.zeros((0, chunk_samples), dtype=np.float32)
    held_owner = np.zeros(0, dtype=np.int64)
    for start in range(0, len(val), group_clips):
        chunks, owner = audio_patches([waveforms[int(i)] for i in val[start:start + group_clips]],
                                      chunk_samples=chunk_samples, hop_samples=hop_samples)
        chunks = np.concatenate([held_chunks, chunks])
        owner = np.concatenate([held_owner, owner.astype(np.int64) + start])
        cut = len(chunks) - len(chunks) % batch
        if cut:
            yield chunks[:cut], owner[:cut]
        held_chunks, held_owner = chunks[cut:].copy(), owner[cut:].copy()  # copies: free the group's block
    if len(held_chunks):
        yield held_chunks, held_owner


def _holds_tflm_clips(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bool:
    """Whether the blocks ``parts`` (``(features, owner, float probs)``, the first blocks of the validation
    patches) hold every patch of the clips ``_tflm_check`` runs: the first ``TFLM_MAX_PATCHES`` patches and the
    rest of the last one's clip (a later clip's patch has been seen). Short of that, the next block is needed
    (or there is none: then the blocks hold every patch)."""
    if not parts:
        return False
    owner = np.concatenate([o for _, o, _ in parts])
    return len(owner) >= TFLM_MAX_PATCHES and owner[-1] > owner[TFLM_MAX_PATCHES - 1]


def _tflm_check(tflite_path: Path, x_val: np.ndarray, owner: np.ndarray, f_clip: np.ndarray,
                float_probs: np.ndarray) -> dict:
    """TFLite-Micro arena and agreement with float on the validation clips whose patches fit ``TFLM_MAX_PATCHES``
    (the reference kernels are slow); an unsupported model is reported, not fatal.

    Args:
        tflite_path: The INT8 model.
        x_val: Normalised features of the first validation patches in order, ``(n, C, F, T)``: at least every
            patch of the clips that the first ``TFLM_MAX_PATCHES`` patches belong to (or all patches).
        owner: Validation-clip position of each patch, ``(n,)``, non-decreasing from 0.
        f_clip: Float clip probabilities of the validation clips, ``(n_val, K)``.
        float_probs: Float patch probabilities of ``x_val``, ``(n, K)``.
    """
    try:
        arena = tflm_arena_bytes(tflite_path)
        n_clips = int(owner[min(len(owner), TFLM_MAX_PATCHES) - 1]) + 1  # whole clips, about TFLM_MAX_PATCHES
        keep = owner < n_clips
        probs = softmax_rows(run_int8_tflm(tflite_path, x_val[keep], arena_size=arena))
        t_clip = clip_probabilities(probs, owner[keep], n_clips)
        return {"tflm_arena_bytes": arena, "tflm_validation_clips": n_clips,
                "tflm_float_agreement": float((f_clip[:n_clips].argmax(1) == t_clip.argmax(1)).mean()),
                "tflm_float_patch_agreement": float((float_probs[keep].argmax(1) == probs.argmax(1)).mean())}
    except TFLMError as exc:
        log.warning("TFLite-Micro check of %s failed: %s", tflite_path, exc)
        return {"tflm_error": str(exc)}


SEARCH_MODEL_FILE = "search_model.pt"
"""A refit model's folder keeps the search's own checkpoint under this name (``model.pt`` is the refit one)."""


def model_to_export(row: dict, dest: Path, refit: Callable[[Path, Path], Path] | None) -> tuple[Path, Path | None]:
    """Put the checkpoint to export into ``dest``: the trial's own (``model.pt``), or, with ``refit``, the search's
    as ``search_model.pt`` and ``refit(search_model_pt, dest / "model.pt")``'s as ``model.pt``.

    Returns:
        ``(model_pt, search_model_pt or None)``.
    """
    model_pt = copy_checkpoint(row, dest)
    if refit is None:
        return model_pt, None
    search_pt = dest / SEARCH_MODEL_FILE
    model_pt.replace(search_pt)
    return refit(search_pt, model_pt), search_pt


def export_front(run_dir: Path, front: list[dict], data_by_rate: dict[int, DecodedDataset], budget: Budget, *,
                 max_export: int, say: Callable[[str], None],
                 refit: Callable[[Path, Path], Path] | None = None) -> list[dict]:
    """Export and validate the chosen front members into ``run_dir/models/<trial_id>/``.

    Args:
        refit: ``refit(search_model_pt, out_model_pt)`` trains a member again before its export (on train +
            validation, ``asc_search.search.refit_checkpoint``); None exports the search's weights.

    A member whose export (or refit) fails is recorded with its error; the others go on.
    """
    cache = FeatureCache(run_cache_dir(run_dir), run=str(Path(run_dir).resolve()))
    out = []
    picks = choose_exports(front, max_export)
    for k, row in enumerate(picks, 1):
        dest = run_dir / MODELS_DIR / row["trial_id"]
        say(f"export {k}/{len(picks)}: {row['trial_id']} ({row['summary']})")
        try:
            model_pt, search_pt = model_to_export(row, dest, refit)
            v = export_and_validate(model_pt, data_by_rate, cache, budget, search_model_pt=search_pt)
        except Exception as exc:  # noqa: BLE001 - one failed member must not cost the others or the report
            log.error("export of %s failed: %s: %s", row["trial_id"], type(exc).__name__, exc)
            v = {"trial_id": row["trial_id"], "error": f"{type(exc).__name__}: {exc}", "deployable": False}
            write_json(dest / VALIDATION_FILE, v)
        row["exported"] = True
        out.append(v)
    return out
