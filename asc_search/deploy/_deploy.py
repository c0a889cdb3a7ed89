"""Deployable bundles: the picked INT8 model with its float front-end as TFLite, and their validation on audio.

A bundle (DeepSpectrumLite ships its pre-processing with the model the same way) holds
``model_int8.tflite``, ``frontend.tflite`` (raw PCM of one chunk -> normalised features, float, NHWC),
``frontend.json``, ``labels.txt``, ``model_data.h/.cc``, ``validation.json``, ``split.json`` (the run's data and split
settings) and a README.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asc_search._errors import UserInputError
from asc_search._io import atomic_write, write_json, write_text
from asc_search.constraints import get_budget
from asc_search.data import Manifest, SkippedFile, count_patches, decode_clip, load_manifest, pad_to_patches
from asc_search.deploy._export import ExportError, _ensure_tools_on_path, _redirect_fds
from asc_search.deploy._limits import (
    LimitCheck,
    check_limits,
    describe_failures,
    measured_from_validation,
    passes,
)
from asc_search.deploy._validate import run_int8
from asc_search.frontends import Deltas, FrontendConfig, build_frontend
from asc_search.rundir import (
    CONFIG_FILE,
    ENSEMBLE_ID,
    LABELS_FILE,
    MODEL_FILE,
    MODELS_DIR,
    VALIDATION_FILE,
    load_checkpoint,
    load_run,
    read_run_config,
)
from asc_search.trainers import classification_metrics

log = logging.getLogger(__name__)

BUNDLE_FILES = ("model_int8.tflite", "frontend.tflite", "frontend.json", "labels.txt")
FEATURE_TOLERANCE = 1e-2  # max |frontend.tflite - PyTorch| on normalised features (standard deviations)
MIN_BUNDLE_AGREEMENT = 0.95
AUDIO_GROUP_CLIPS = 256
SPLIT_FILE = "split.json"  # in a bundle: the run's data and the load_manifest arguments of its split


def run_split(config: dict) -> dict:
    """The ``load_manifest`` arguments that rebuild a run's train/validation/test split (``val_fold``,
    ``test_fold``, ``seed``), from its ``config.yaml`` (``config["run"]``)."""
    r = config.get("run", {})

    def fold(key: str) -> str | None:
        return None if r.get(key) in (None, "") else str(r[key])

    return {"val_fold": fold("val_fold"), "test_fold": fold("test_fold"), "seed": int(r.get("seed", 0))}


def model_split(model_dir: Path) -> dict:
    """The split arguments of the run a bundle or ``models/<trial>/`` folder comes from: the bundle's
    ``split.json``, else the run's ``config.yaml`` two folders up, else the defaults of a search."""
    model_dir = Path(model_dir)
    if (model_dir / SPLIT_FILE).is_file():
        return run_split({"run": json.loads((model_dir / SPLIT_FILE).read_text())})
    for run_dir in (model_dir.parent.parent, model_dir.parent.parent.parent):  # models/<trial>/, ensemble members
        if (run_dir / CONFIG_FILE).is_file():
            return run_split(read_run_config(run_dir) or {})
    return run_split({})
"""Clips that ``validate`` and the bundle's parity check decode and cut into patches at once: memory holds one
group's audio, patches and features plus ``(n_clips, n_classes)`` clip sums, whatever the size of the data set."""


class DeployFrontend(nn.Module):
    """The whole float front-end of a model: ``(1, chunk_samples) -> (1, 1 + deltas, n_bins, frames)``.

    Static spectrogram (registry front-end), delta channels, per-channel standardisation: exactly the model's
    float input. Exported to ``frontend.tflite`` (onnx2tf gives NHWC ``[1, n_bins, frames, channels]``).
    """

    def __init__(self, config: FrontendConfig, mean_db: list[float], std_db: list[float]) -> None:
        super().__init__()
        self.frontend = build_frontend(dataclasses.replace(config, deltas=0))
        self.deltas = Deltas(order=config.deltas) if config.deltas else None
        self.register_buffer("mean", torch.tensor(mean_db, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std_db, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` audio -> ``(batch, channels, n_bins, frames)`` normalised features."""
        x = self.frontend(waveform).unsqueeze(1)
        if self.deltas is not None:
            x = self.deltas(x)
        return (x - self.mean) / self.std


def batched(module: nn.Module, x: np.ndarray, *, batch: int = 256, softmax: bool = False) -> np.ndarray:
    """Run ``module`` over ``x`` in batches (bounded memory) and concatenate; optionally softmax over dim 1."""
    outs = []
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            y = module(torch.from_numpy(x[s:s + batch]))
            outs.append((torch.softmax(y, dim=1) if softmax else y).numpy())
    return np.concatenate(outs)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, k)`` logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def load_frontend(frontend_json: Path) -> tuple[DeployFrontend, dict]:
    """The ``DeployFrontend`` described by a model's ``frontend.json`` (its ``frontend`` entry read back by the
    front-end registry, ``FrontendConfig.from_json``), and that JSON.

    Raises:
        UserInputError: The file names an unknown front-end kind or misses a field it needs.
    """
    spec = json.loads(Path(frontend_json).read_text())
    config = FrontendConfig.from_json(spec["frontend"])
    norm = spec["normalisation"]
    return DeployFrontend(config, norm["mean_db"], norm["std_db"]).eval(), spec


def export_frontend_tflite(frontend: DeployFrontend, chunk_samples: int, out_path: Path) -> Path:
    """Export the float front-end to TFLite through the same ONNX -> onnx2tf path as the model.

    Raises:
        ExportError: The conversion failed.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _ensure_tools_on_path()
    with _redirect_fds(Path(tempfile.gettempdir()) / "asc_search_tf_import.log"):
        import onnx2tf
    with tempfile.TemporaryDirectory(prefix="asc_frontend_") as tmp:
        tmp_path = Path(tmp)
        example = torch.zeros(1, chunk_samples)
        try:
            torch.onnx.export(frontend.eval(), (example,), str(tmp_path / "frontend.onnx"), input_names=["waveform"],
                              output_names=["features"], opset_version=18, dynamo=False)
            with _redirect_fds(tmp_path / "onnx2tf.log"):
                onnx2tf.convert(input_onnx_file_path=str(tmp_path / "frontend.onnx"),
                                output_folder_path=str(tmp_path / "tf"), non_verbose=True)
        except BaseException as exc:  # onnx2tf may sys.exit
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ExportError(f"front-end export failed: {type(exc).__name__}: {exc}") from exc
        produced = sorted((tmp_path / "tf").glob("*_float32.tflite"))
        if not produced:
            raise ExportError("onnx2tf wrote no float32 front-end")
        atomic_write(out_path, lambda p: shutil.copyfile(produced[0], p))
    return out_path


def _run_frontend_tflite(path: Path, chunks: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    feats = []
    for c in chunks:
        it.set_tensor(inp["index"], c[None].astype(np.float32))
        it.invoke()
        feats.append(it.get_tensor(out["index"])[0])
    return np.stack(feats).transpose(0, 3, 1, 2)  # NHWC -> NCHW


def audio_patches(waves: list[np.ndarray], *, chunk_samples: int, hop_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw audio patches of clips (50 % overlap, the padding rule of training).

    Returns:
        ``(chunks (n_patches, chunk_samples), owner (n_patches,))``.
    """
    chunks, owner = [], []
    for k, w in enumerate(waves):
        padded = pad_to_patches(w, chunk_samples=chunk_samples, patch_hop_samples=hop_samples)
        n = count_patches(len(w), chunk_samples=chunk_samples, patch_hop_samples=hop_samples)
        for p in range(n):
            chunks.append(padded[p * hop_samples:p * hop_samples + chunk_samples])
            owner.append(k)
    return np.stack(chunks).astype(np.float32), np.asarray(owner)


def evaluate_model_dir(model_dir: Path, data_path: Path | str, *, split: str = "all",
                       val_fold: str | None = None, test_fold: str | None = None, seed: int | None = None) -> dict:
    """Run a bundle (``frontend.tflite`` + ``model_int8.tflite``) or an exported model folder (PyTorch front-end
    from ``frontend.json`` + ``model_int8.tflite``) on labelled audio.

    Args:
        model_dir: Bundle or ``models/<trial>/`` folder.
        data_path: Dataset folder or CSV manifest (any split: a set whose rows are all ``test`` is scored whole).
        split: ``all`` (every labelled clip found), ``test`` or ``validation`` (that part of the split of the run
            the model comes from, rebuilt with that run's seed and folds: ``model_split``).
        val_fold: Validation fold, overriding the run's (``test`` / ``validation`` only).
        test_fold: Test fold, overriding the run's (``test`` / ``validation`` only).
        seed: Seed of the validation carve, overriding the run's (``test`` / ``validation`` only).

    Returns:
        Metrics: accuracy, log loss, UAR, confusion matrix, clips, class names, front-end used, the split rule.

    Raises:
        UserInputError: A file is missing, ``split`` is unknown, or the data has a class ``labels.txt`` lacks.
    """
    from sklearn.metrics import confusion_matrix

    model_dir = Path(model_dir)
    for name in ("model_int8.tflite", "frontend.json", "labels.txt"):
        if not (model_dir / name).exists():
            raise UserInputError(f"{model_dir} has no {name}; pass a bundle from 'asc-search deploy' or a "
                                 "models/<trial>/ folder of a run")
    labels = (model_dir / LABELS_FILE).read_text().split("\n")
    labels = [lab for lab in labels if lab]
    if split not in ("all", "test", "validation"):
        raise UserInputError(f"--split must be all, test or validation, got {split!r}")
    if split == "all":
        manifest = load_manifest(data_path, require_split=False)
    else:
        args = model_split(model_dir)
        args = {"val_fold": args["val_fold"] if val_fold is None else val_fold,
                "test_fold": args.get("test_fold") if test_fold is None else test_fold,
                "seed": args["seed"] if seed is None else seed}
        manifest = load_manifest(data_path, **args, require_split=split == "validation")
        if split == "test" and not any(c.is_test for c in manifest.clips):
            raise UserInputError(f"{data_path} has no test split under the run's rule ({manifest.split_rule}); "
                                 "pass --split all to score every clip")
    if not set(manifest.class_names) <= set(labels):
        raise UserInputError(
            f"the classes of {data_path} {sorted(manifest.class_names)} are not all in {model_dir / 'labels.txt'} "
            f"{labels}; validate on data with the model's classes")
    frontend, spec = load_frontend(model_dir / "frontend.json")
    rate = spec["frontend"]["sample_rate_hz"]
    clips = [c for c in manifest.clips if split == "all" or c.split == split]
    chunk = int(round(spec["chunk_s"] * rate))
    hop = spec["patch_hop_frames"] * spec["frontend"]["hop_samples"]
    tflite_frontend = (model_dir / "frontend.tflite").exists()
    used = "frontend.tflite" if tflite_frontend else "PyTorch front-end from frontend.json"
    probs = ClipMeans(len(clips), len(labels))
    skipped: list[SkippedFile] = []
    for chunks, owner in audio_groups(manifest, clips, sample_rate_hz=rate, chunk_samples=chunk, hop_samples=hop,
                                      skipped=skipped):
        feats = (_run_frontend_tflite(model_dir / "frontend.tflite", chunks) if tflite_frontend
                 else batched(frontend, chunks))
        probs.add(softmax_rows(run_int8(model_dir / "model_int8.tflite", feats, xnnpack=True)), owner)
    kept = _kept(clips, skipped, manifest)
    # labels.txt order is the model's output order
    y = np.array([labels.index(clips[i].label) for i in kept])
    p = probs.means()[kept]
    m = classification_metrics(y, p)
    return {**m, "clips": int(len(kept)), "split": split, "split_rule": manifest.split_rule, "classes": labels,
            "frontend": used,
            "skipped": [dataclasses.asdict(f) for f in skipped],
            "confusion_matrix": confusion_matrix(y, p.argmax(1), labels=range(len(labels))).tolist()}


class ClipMeans:
    """Clip-level mean of patch probabilities (the seed paper's eq. 1 fusion), summed block by block: the same
    values, bit for bit, as ``clip_probabilities`` over all patches at once (float64 sums, patches added in the
    same order), without holding every patch's output.

    Args:
        n_clips: Clips, ``owner`` values in ``[0, n_clips)``.
        n_classes: Columns of the probabilities.
    """

    def __init__(self, n_clips: int, n_classes: int):
        self.sums = np.zeros((n_clips, n_classes), dtype=np.float64)
        self.counts = np.zeros(n_clips, dtype=np.int64)

    def add(self, patch_probs: np.ndarray, owner: np.ndarray) -> None:
        """Add patch probabilities ``(n, n_classes)`` of the clips ``owner`` ``(n,)``."""
        np.add.at(self.sums, owner, patch_probs)
        self.counts += np.bincount(owner, minlength=len(self.counts))

    def means(self) -> np.ndarray:
        """Clip probabilities ``(n_clips, n_classes)`` float64 (a clip without patches: zeros)."""
        return self.sums / np.maximum(self.counts[:, None], 1)


def audio_groups(manifest: Manifest, clips: list, *, sample_rate_hz: int, chunk_samples: int, hop_samples: int,
                 skipped: list[SkippedFile],
                 group_clips: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode ``clips`` (of ``manifest``) ``group_clips`` (default ``AUDIO_GROUP_CLIPS``) at a time and yield
    each group's raw audio patches: no step holds the audio of the whole list.

    Files that cannot be decoded are appended to ``skipped`` (with their reason, as the search's preparation
    reports them) and have no patch.

    Args:
        manifest: Where the clips come from (named in errors).
        clips: Manifest clips to read, in order.
        sample_rate_hz: Decoding rate (Hz).
        chunk_samples: Patch length (samples).
        hop_samples: Patch hop (samples).
        skipped: Receives the files left out.
        group_clips: Clips decoded at once (>= 1).

    Yields:
        ``(chunks (n, chunk_samples) float32, owner (n,) int64)``: ``owner`` is the position in ``clips``.

    Raises:
        UserInputError: No clip could be decoded.
    """
    group_clips = AUDIO_GROUP_CLIPS if group_clips is None else group_clips
    decoded = 0
    for start in range(0, len(clips), group_clips):
        waves, where = [], []
        for k, clip in enumerate(clips[start:start + group_clips], start=start):
            mono, _, reason = decode_clip(clip.path, sample_rate_hz)
            if mono is None:
                skipped.append(SkippedFile(path=str(clip.path), reason=reason))
                log.warning("skipped %s: %s", clip.path, reason)
                continue
            waves.append(mono)
            where.append(k)
        if waves:
            decoded += len(waves)
            chunks, owner = audio_patches(waves, chunk_samples=chunk_samples, hop_samples=hop_samples)
            yield chunks, np.asarray(where, dtype=np.int64)[owner]
    if not decoded:
        raise UserInputError(f"none of the {len(clips)} clips of {manifest.source} to validate on could be decoded")


def _kept(clips: list, skipped: list[SkippedFile], manifest: Manifest) -> np.ndarray:
    """Positions in ``clips`` of the clips that were decoded."""
    left_out = {f.path for f in skipped}
    return np.asarray([i for i, c in enumerate(clips) if str(c.path) not in left_out], dtype=np.int64)


def end_to_end_latency_ms(bundle: Path, chunk_samples: int, *, runs: int = 50, warmup: int = 5) -> float:
    """Median host latency (ms) of ``frontend.tflite`` then ``model_int8.tflite`` on one chunk of audio."""
    import statistics
    import time

    from ai_edge_litert.interpreter import Interpreter

    fe = Interpreter(model_path=str(bundle / "frontend.tflite"), num_threads=1)
    fe.allocate_tensors()
    model = Interpreter(model_path=str(bundle / "model_int8.tflite"), num_threads=1)
    model.allocate_tensors()
    fi, fo = fe.get_input_details()[0], fe.get_output_details()[0]
    mi = model.get_input_details()[0]
    scale, zero = mi["quantization"]
    audio = np.zeros((1, chunk_samples), dtype=np.float32)
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        fe.set_tensor(fi["index"], audio)
        fe.invoke()
        feats = fe.get_tensor(fo["index"])
        model.set_tensor(mi["index"], np.clip(np.round(feats / scale + zero), -128, 127).astype(np.int8))
        model.invoke()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def adb_benchmark(bundle: Path, *, device_dir: str = "/data/local/tmp/asc_search") -> dict:
    """Push the bundle's models to an Android device and time them with TFLite's ``benchmark_model``.

    Needs ``adb`` on PATH, one device attached, and ``benchmark_model`` in ``device_dir`` on the device
    (TFLite's prebuilt Android binary).

    Returns:
        ``{"model_int8_avg_us": float, "frontend_avg_us": float, "raw": {...}}`` as ``benchmark_model`` reports.

    Raises:
        UserInputError: adb is missing, no device answers, or benchmark_model is not on the device.
    """
    import re
    import subprocess

    if shutil.which("adb") is None:
        raise UserInputError("--adb needs the 'adb' program on PATH (Android platform-tools); install it or drop --adb")

    def adb(*args: str) -> str:
        p = subprocess.run(["adb", *args], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise UserInputError(f"adb {' '.join(args)} failed: {p.stderr.strip()[:200]}")
        return p.stdout

    adb("shell", "test", "-x", f"{device_dir}/benchmark_model")
    out = {"raw": {}}
    for name in ("model_int8.tflite", "frontend.tflite"):
        adb("push", str(bundle / name), f"{device_dir}/{name}")
        text = adb("shell", f"{device_dir}/benchmark_model", f"--graph={device_dir}/{name}", "--num_threads=1")
        m = re.findall(r"avg=([0-9.]+)", text)
        out["raw"][name] = text[-500:]
        out[name.split(".")[0] + "_avg_us"] = float(m[-1]) if m else None
    return out


class TargetBudgetError(UserInputError):
    """The bundled model breaks the ``--target`` budget. The bundle was written anyway (``target_pass: false``
    and the failed lines in its ``validation.json``); ``report`` is that validation dict, ``checks`` the lines."""

    def __init__(self, message: str, report: dict, checks: list[LimitCheck]) -> None:
        super().__init__(message)
        self.report, self.checks = report, checks


def make_bundle(run_dir: str | Path, pick: str, *, out: str | Path | None = None, target: str | None = None,
                adb: bool = False) -> dict:
    """Write the deployable bundle of one exported model (or of the exported ensemble) of a run.

    The model's figures counted at export (INT8 bytes, parameters, MACs, the TFLite-Micro arena, the INT8/float
    agreement; the latency estimated from the MACs on the budget's device) are checked against every limit of the
    target budget by ``check_limits``: ``target_pass`` in the bundle's ``validation.json`` is whether every line
    passes, ``target_limits`` holds the lines and ``target_failures`` the failed ones, one sentence each.

    Args:
        run_dir: The run directory.
        pick: A trial id, ``knee``, ``best`` (most accurate deployable exported model) or ``ensemble`` (the
            exported ensemble: one sub-bundle per member beside ``fusion.json``).
        out: Bundle folder (default ``RUN/bundles/<trial>``).
        target: Budget name to re-check the model against (default: the run's budget).
        adb: Also time the models on an attached Android device (``adb_benchmark``).

    Returns:
        The bundle's validation dict (also ``validation.json`` in the bundle).

    Raises:
        UserInputError: The pick names no exported deployable model, or the target budget is unknown.
        TargetBudgetError: The model breaks the target budget (a ``UserInputError``, raised after the bundle is
            written; the message names each failed limit, its measured value and the limit).
    """
    run = load_run(run_dir)
    budget = get_budget(target) if target else run.budget
    if pick == ENSEMBLE_ID:
        return _make_ensemble_bundle(run, budget, out=out, adb=adb)
    exported = {v["trial_id"]: v for v in run.exported if "error" not in v and v.get("trial_id") != ENSEMBLE_ID}
    # best = the search's validation accuracy (the selection split; after a refit the export's own validation
    # figures are training figures, and the test figures are never used to choose)
    val_acc = {r["trial_id"]: float(r.get("best_val_accuracy") or 0.0) for r in run.trials}
    deployable = sorted((v for v in exported.values() if v.get("deployable")),
                        key=lambda v: (-val_acc.get(v["trial_id"], v["int8"]["accuracy"]), v["macs_tflite"]))
    if pick == "best":
        if not deployable:
            raise UserInputError(f"{run.run_dir} has no deployable exported model; see its report.md")
        trial = deployable[0]["trial_id"]
    elif pick == "knee":
        trial = json.loads((run.run_dir / "pareto.json").read_text()).get("knee_trial_id")
        if trial is None:
            raise UserInputError(f"{run.run_dir} has no knee point (empty front)")
    else:
        trial = pick
    if trial not in exported:
        raise UserInputError(f"--pick {pick!r}: trial {trial} has no exported model in {run.run_dir}; "
                             f"exported: {', '.join(sorted(exported)) or 'none'}")
    v = exported[trial]
    if not v.get("deployable"):
        raise UserInputError(f"trial {trial} is not deployable ({_stored_failures(v)}); "
                             f"deployable: {', '.join(d['trial_id'] for d in deployable) or 'none'}")
    checks = check_limits(budget, measured_from_validation(v))
    dest = Path(out) if out else run.run_dir / "bundles" / trial
    files, spec = _bundle_model(run, run.run_dir / MODELS_DIR / trial, dest)
    report = {**v, "bundle": str(dest), **_target_fields(budget, checks), **files}
    if adb:
        report["device_benchmark"] = adb_benchmark(dest)
    write_json(dest / VALIDATION_FILE, report)
    write_text(dest / "README.md", _bundle_readme(trial, report, spec))
    _raise_unless_passed(f"trial {trial}", dest, budget, checks, report)
    return report


def _bundle_model(run, src: Path, dest: Path) -> tuple[dict, dict]:
    """Copy one exported model into ``dest`` with its front-end as TFLite; the parity and host latency figures
    (keys of the bundle's ``validation.json``) and the model's ``frontend.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model_int8.tflite", "frontend.json", "labels.txt", "model_data.h", "model_data.cc"):
        atomic_write(dest / name, lambda p, n=name: shutil.copyfile(src / n, p))
    frontend, spec = load_frontend(src / "frontend.json")
    chunk = int(round(spec["chunk_s"] * spec["frontend"]["sample_rate_hz"]))
    export_frontend_tflite(frontend, chunk, dest / "frontend.tflite")
    # parity: bundle on raw audio vs PyTorch front-end + float model
    data_path = run.config.get("run", {}).get("data")
    split = run_split(run.config)
    write_json(dest / SPLIT_FILE, {"data": data_path, **split})  # validate --split validation rebuilds it
    parity = _bundle_parity(src, dest, data_path, frontend, spec, split) if data_path else {}
    return {**parity, "feature_tolerance": FEATURE_TOLERANCE,
            "latency_ms_end_to_end": round(end_to_end_latency_ms(dest, chunk), 4),
            "latency_end_to_end_note": "frontend.tflite + model_int8.tflite on one chunk, host CPU, LiteRT "
                                       "(XNNPACK), 1 thread, median of 50 runs after 5 warm-up runs"}, spec


def _make_ensemble_bundle(run, budget, *, out: str | Path | None, adb: bool) -> dict:
    """The exported ensemble as a bundle: ``<member>/`` (a single-model bundle each), ``fusion.json`` (paths
    relative to the bundle), ``validation.json`` (the ensemble's, with the target's lines) and a README."""
    folder = run.run_dir / MODELS_DIR / ENSEMBLE_ID
    if not (folder / VALIDATION_FILE).is_file() or not (folder / "fusion.json").is_file():
        raise UserInputError(f"--pick {ENSEMBLE_ID}: {run.run_dir} has no exported ensemble "
                             f"(models/{ENSEMBLE_ID}/validation.json and fusion.json)")
    v = json.loads((folder / VALIDATION_FILE).read_text())
    if "error" in v or not v.get("deployable"):
        raise UserInputError(f"the ensemble of {run.run_dir} is not deployable "
                             f"({v.get('error') or _stored_failures(v)}); bundle a single model instead")
    fusion = json.loads((folder / "fusion.json").read_text())
    checks = check_limits(budget, measured_from_validation(v))
    dest = Path(out) if out else run.run_dir / "bundles" / ENSEMBLE_ID
    member_bundles = {}
    for m in v["members"]:
        mv = json.loads((run.run_dir / MODELS_DIR / m / VALIDATION_FILE).read_text())
        files, spec = _bundle_model(run, run.run_dir / MODELS_DIR / m, dest / m)
        member = {**mv, "bundle": str(dest / m), "ensemble_member_of": str(dest), **files}
        if adb:
            member["device_benchmark"] = adb_benchmark(dest / m)
        write_json(dest / m / VALIDATION_FILE, member)
        write_text(dest / m / "README.md", _bundle_readme(m, member, spec))
        member_bundles[m] = files
    write_json(dest / "fusion.json", {
        **fusion, "paths": "relative to the bundle folder",
        "members": [{"trial_id": m, "folder": m, "tflite": f"{m}/model_int8.tflite", "frontend": f"{m}/frontend.json",
                     "frontend_tflite": f"{m}/frontend.tflite"} for m in v["members"]]})
    parities = [b for b in member_bundles.values() if "bundle_float_agreement" in b]
    report = {**v, "bundle": str(dest), **_target_fields(budget, checks), "member_bundles": member_bundles,
              "latency_ms_end_to_end": round(sum(b["latency_ms_end_to_end"] for b in member_bundles.values()), 4),
              "latency_end_to_end_note": "sum over the members (they run one after another) of frontend.tflite + "
                                         "model_int8.tflite on one chunk, host CPU, LiteRT (XNNPACK), 1 thread"}
    if parities:
        report["bundle_agreement_pass"] = all(b["bundle_agreement_pass"] for b in parities)
        report["frontend_within_tolerance"] = all(b["frontend_within_tolerance"] for b in parities)
    write_json(dest / VALIDATION_FILE, report)
    write_text(dest / "README.md", _ensemble_readme(report))
    _raise_unless_passed(f"the ensemble ({' + '.join(v['members'])})", dest, budget, checks, report)
    return report


def _target_fields(budget, checks: list[LimitCheck]) -> dict:
    return {"target": budget.name, "target_pass": passes(checks),
            "target_limits": [c.to_dict() for c in checks],
            "target_failures": [c.describe() for c in checks if not c.passed]}


def _raise_unless_passed(what: str, dest: Path, budget, checks: list[LimitCheck], report: dict) -> None:
    if not passes(checks):
        raise TargetBudgetError(f"{what} breaks --target {budget.name}: {describe_failures(checks)}; the bundle "
                                f"is written to {dest} with target_pass false", report, checks)


def _stored_failures(v: dict) -> str:
    """The failed lines of a ``validation.json``'s ``limits``, in one line."""
    failed = describe_failures(LimitCheck.from_dict(d, budget=v.get("budget", "")) for d in v.get("limits", []))
    return f"fails {failed}" if failed else "no limit failed"


def _bundle_parity(src: Path, dest: Path, data_path: str, frontend: DeployFrontend, spec: dict,
                   split: dict) -> dict:
    """The bundle (``frontend.tflite`` + ``model_int8.tflite``) against the PyTorch front-end and float model on
    the validation clips of ``data_path`` (the run's split: ``split`` holds its ``load_manifest`` arguments),
    decoded ``AUDIO_GROUP_CLIPS`` at a time."""
    from sklearn.metrics import confusion_matrix

    model = load_checkpoint(src / MODEL_FILE).build_model()
    rate = spec["frontend"]["sample_rate_hz"]
    manifest = load_manifest(data_path, **split)
    clips = [c for c in manifest.clips if c.is_validation]
    labels = [lab for lab in (dest / LABELS_FILE).read_text().split("\n") if lab]
    chunk = int(round(spec["chunk_s"] * rate))
    hop = spec["patch_hop_frames"] * spec["frontend"]["hop_samples"]
    q_sum, f_sum = ClipMeans(len(clips), len(labels)), ClipMeans(len(clips), len(labels))
    skipped: list[SkippedFile] = []
    diff = 0.0
    for chunks, owner in audio_groups(manifest, clips, sample_rate_hz=rate, chunk_samples=chunk, hop_samples=hop,
                                      skipped=skipped):
        ref_feats = batched(frontend, chunks)
        f_sum.add(batched(model, ref_feats, softmax=True), owner)
        tfl_feats = _run_frontend_tflite(dest / "frontend.tflite", chunks)
        q_sum.add(softmax_rows(run_int8(dest / "model_int8.tflite", tfl_feats)), owner)
        diff = max(diff, float(np.abs(tfl_feats - ref_feats).max()))
    kept = _kept(clips, skipped, manifest)
    q, f = q_sum.means()[kept], f_sum.means()[kept]
    agreement = float((q.argmax(1) == f.argmax(1)).mean())
    # the bundle's own figures on the validation split: what 'asc-search validate BUNDLE' prints (same pipeline)
    y = np.array([labels.index(clips[i].label) for i in kept])
    bundle_metrics = {**classification_metrics(y, q), "clips": int(len(kept)), "split": "validation",
                      "split_rule": manifest.split_rule,
                      "classes": labels, "frontend": "frontend.tflite",
                      "skipped": [dataclasses.asdict(s) for s in skipped],
                      "confusion_matrix": confusion_matrix(y, q.argmax(1), labels=range(len(labels))).tolist()}
    return {"bundle_metrics": bundle_metrics, "bundle_float_agreement": agreement,
            "bundle_agreement_pass": agreement >= MIN_BUNDLE_AGREEMENT, "frontend_max_abs_diff": diff,
            "frontend_within_tolerance": diff <= FEATURE_TOLERANCE}


def _bundle_readme(trial: str, v: dict, spec: dict) -> str:
    fe = spec["frontend"]
    return f"""# asc-search bundle: trial {trial}

`{v['summary']}`

| file | what |
|---|---|
| `frontend.tflite` | float front-end: raw PCM, one chunk of {spec['chunk_s']} s at {fe['sample_rate_hz']} Hz (`[1, samples]`) -> normalised features `[1, n_bins, frames, channels]` |
| `model_int8.tflite` | full-integer INT8 classifier: quantise the features with its input scale / zero point; output int8 logits |
| `frontend.json` | every front-end parameter with units, the patch layout and the normalisation |
| `labels.txt` | class names in output order |
| `model_data.h/.cc` | the model as a 16-byte-aligned C array for TFLite-Micro |
| `validation.json` | the numbers below and more |
| `split.json` | the run's data and split settings (seed, validation and test folds): `asc-search validate --split test` (or `validation`) rebuilds that part of the split |

Clip prediction: cut the clip into patches of {spec['chunk_s']} s with 50 % overlap, run both models on each
patch, average the softmax probabilities (mean fusion).

| figure | value |
|---|---|
| INT8 weight bytes (counted on the graph) | {v['int8_bytes_tflite']:,} |
| MACs per 1 s of audio (counted on the graph) | {v['macs_tflite']:,} |
{_test_row(v)}| INT8 accuracy on the validation split (LiteRT{'; the refit model trained on it' if v.get('refit') else ''}) | {v['int8']['accuracy']:.3f} |
| INT8 / float agreement: XNNPACK, builtin, TFLite-Micro | {v['int8_float_agreement']:.3f}, {v.get('int8_builtin_float_agreement', float('nan')):.3f}, {v.get('tflm_float_agreement', float('nan')):.3f} |
| bundle (frontend.tflite + INT8) / PyTorch float agreement | {v.get('bundle_float_agreement', float('nan')):.3f} |
| front-end max abs difference to PyTorch (normalised units; tolerance {FEATURE_TOLERANCE}) | {v.get('frontend_max_abs_diff', float('nan')):.2e} |
| TFLite-Micro arena (bytes) | {v.get('tflm_arena_bytes', '-')} |
| end-to-end host latency, frontend.tflite + INT8 model, one chunk (ms) | {v.get('latency_ms_end_to_end', float('nan')):.3f} |
| host latency, LiteRT 1 thread, XNNPACK / builtin (ms) | {v.get('latency_ms_litert_xnnpack', float('nan')):.3f} / {v.get('latency_ms_litert_builtin', float('nan')):.3f} |
| target budget | {_target_line(v)} |
"""


def _test_row(v: dict) -> str:
    """The bundle README's test row (the held-out split the search never read), or ""."""
    t = (v.get("test") or {}).get("int8")
    if not t:
        return ""
    ci = t.get("accuracy_ci95")
    return (f"| INT8 accuracy on the test split ({v['test']['clips']} clips, never seen by the search; 95 % "
            f"bootstrap interval) | {t['accuracy']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + " |\n")


def _target_line(v: dict) -> str:
    if "target" not in v:  # a member of an ensemble bundle: the target is checked on the whole ensemble
        return "checked on the whole ensemble, see ../validation.json"
    if v["target_pass"]:
        return f"{v['target']} (pass)"
    return f"{v['target']} (FAIL: {'; '.join(v['target_failures'])})"


def _ensemble_readme(v: dict) -> str:
    rows = "\n".join(f"| `{m}/` | {b.get('bundle_float_agreement', float('nan')):.3f} | "
                      f"{b.get('frontend_max_abs_diff', float('nan')):.2e} | {b['latency_ms_end_to_end']:.3f} |"
                      for m, b in v["member_bundles"].items())
    return f"""# asc-search bundle: ensemble

`{v['summary']}`

One folder per member, each a single-model bundle (`frontend.tflite`, `model_int8.tflite`, `frontend.json`,
`labels.txt`, `model_data.h/.cc`, its own README). `fusion.json` says how to fuse: each member computes its clip
probability on its own front-end and patches, then the members' are fused by the `{v['fusion']}` rule.

| member | bundle / PyTorch float agreement | front-end max abs difference | end-to-end host latency, one chunk (ms) |
|---|---|---|---|
{rows}

| figure | value |
|---|---|
| INT8 weight bytes, all members (counted on the graphs) | {v['int8_bytes_tflite']:,} |
| MACs per 1 s of audio, all members | {v['macs_tflite']:,} |
| INT8 accuracy of the fused ensemble on the validation split | {v['int8']['accuracy']:.3f} |
| fused INT8 / float agreement | {v['int8_float_agreement']:.3f} |
| TFLite-Micro arena, the largest member's (bytes) | {v.get('tflm_arena_bytes', '-')} |
| target budget | {_target_line(v)} |
"""
