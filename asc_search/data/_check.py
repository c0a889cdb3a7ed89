"""Dataset check: what a dataset holds, read from the file headers without decoding the audio.

``check_dataset`` loads the manifest (the same layouts and split as a search run) and asks soundfile for
each file's header (``soundfile.info``: sample rate, channels, frames), so a 230,000-clip TAU22 folder is
inspected in seconds to minutes rather than decoded. ``format_check`` turns its report into text for
``asc-search data check DIR``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asc_search.data._manifest import ClipRecord, load_manifest

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 20_000
_EXAMPLES = 3
_LIST_LIMIT = 20
_LAYOUT_NAMES = {
    "tau22": "TAU Urban Acoustic Scenes 2022 Mobile (meta.csv + evaluation_setup/)",
    "esc50": "ESC-50 (meta/esc50.csv + audio/)",
    "csv": "CSV manifest",
    "folders": "folder per class",
}


def check_dataset(data: str | Path, *, val_fold: str | None = None, test_fold: str | None = None, seed: int = 0,
                  val_fraction: float = 0.2, short_clip_s: float = 1.0) -> dict:
    """Load the manifest of ``data`` and inspect every file's header.

    Nothing is decoded: sample rate, channels and duration come from ``soundfile.info``. A file whose
    header cannot be read, or that holds no samples, is listed in ``unreadable`` with its reason (the
    same files a run would skip); clips the layout lists but puts in neither split are counted in
    ``left_out_clips`` by reason.

    Args:
        data: Dataset folder or CSV file, as for ``load_manifest``.
        val_fold: Validation fold, as for ``load_manifest`` (default: the layout's own rule).
        test_fold: Test fold, as for ``load_manifest`` (default: the layout's own rule).
        seed: Seed of the stratified random split of layouts without folds or splits.
        val_fraction: Share of clips that random split holds out.
        short_clip_s: Clips shorter than this (seconds, default 1.0: the DCASE Task 1 analysis window)
            are listed in ``short_clips``; they are zero-padded when features are computed.

    Returns:
        A JSON-serialisable dict:

        * ``source``, ``layout``, ``split_rule``;
        * ``clips`` (in the splits), ``train_clips``, ``validation_clips``, ``test_clips``, ``readable_clips``;
        * ``classes``, ``groups`` (folds or splits as written), ``devices``, ``cities``: each
          ``{name: {"clips": n, "train": n, "validation": n, "test": n}}`` over the clips of the splits;
        * ``duration_s``: ``{"min", "median", "max"}`` over readable clips (None when none is readable);
        * ``sample_rates_hz`` and ``channels``: ``{value: files}`` over readable clips;
        * ``unreadable_files`` and ``unreadable``: ``[{"path", "reason"}]``;
        * ``short_clips``: ``[{"path", "duration_s"}]`` of clips shorter than ``short_clip_s``;
        * ``left_out_clips``, ``left_out_reasons`` (``{reason: n}``), ``left_out_examples`` (paths);
        * ``notes``: lines that call for attention (odd sample rates, multi-channel files, ...).

    Raises:
        UserInputError: The manifest cannot be read (see ``load_manifest``).
    """
    manifest = load_manifest(data, val_fold=val_fold, test_fold=test_fold, seed=seed, val_fraction=val_fraction,
                             require_split=False)
    clips = manifest.clips
    rates: Counter = Counter()
    channels: Counter = Counter()
    durations: list[float] = []
    unreadable: list[dict] = []
    short: list[dict] = []
    rate_of: dict[str, int] = {}
    multichannel: list[str] = []
    for i, clip in enumerate(clips, start=1):
        info, reason = _header(clip)
        if i % _PROGRESS_EVERY == 0:
            log.info("checked %d / %d files", i, len(clips))
        if info is None:
            unreadable.append({"path": str(clip.path), "reason": reason})
            continue
        rates[int(info.samplerate)] += 1
        channels[int(info.channels)] += 1
        rate_of[str(clip.path)] = int(info.samplerate)
        if info.channels > 1:
            multichannel.append(str(clip.path))
        seconds = info.frames / info.samplerate
        durations.append(seconds)
        if seconds < short_clip_s:
            short.append({"path": str(clip.path), "duration_s": round(seconds, 4)})
    for u in unreadable:
        log.warning("unreadable %s: %s", u["path"], u["reason"])
    n_split = Counter(c.split for c in clips)
    left_reasons = Counter(c.reason for c in manifest.left_out)
    report = {
        "source": str(manifest.source),
        "layout": manifest.layout,
        "split_rule": manifest.split_rule,
        "clips": len(clips),
        "train_clips": n_split["train"],
        "validation_clips": n_split["validation"],
        "test_clips": n_split["test"],
        "readable_clips": len(durations),
        "classes": _table(clips, lambda c: c.label, order=manifest.class_names),
        "groups": _table(clips, lambda c: c.group),
        "devices": _table(clips, lambda c: c.device),
        "cities": _table(clips, lambda c: c.city),
        "duration_s": None if not durations else {
            "min": float(np.min(durations)), "median": float(np.median(durations)), "max": float(np.max(durations)),
        },
        "sample_rates_hz": dict(sorted(rates.items())),
        "channels": dict(sorted(channels.items())),
        "unreadable_files": len(unreadable),
        "unreadable": unreadable,
        "short_clip_s": short_clip_s,
        "short_clips": short,
        "left_out_clips": len(manifest.left_out),
        "left_out_reasons": dict(left_reasons.most_common()),
        "left_out_examples": [c.path for c in manifest.left_out[:_EXAMPLES]],
    }
    report["notes"] = _notes(report, rates=rates, rate_of=rate_of, multichannel=multichannel, clips=clips)
    return report


def _header(clip: ClipRecord) -> tuple[Any, str]:
    """The header of one file, or None and the reason it cannot be used."""
    try:
        info = sf.info(str(clip.path))
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad files
        if not clip.path.exists():
            return None, "file not found"
        return None, f"cannot read header ({type(exc).__name__}: {exc})"
    if info.frames <= 0 or info.samplerate <= 0:
        return None, "no samples"
    return info, ""


def _table(clips: tuple[ClipRecord, ...], key, *, order: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """``{value: {"clips", "train", "validation", "test"}}`` over ``clips``; empty when no clip has a value."""
    total: Counter = Counter()
    parts: dict[str, Counter] = {}
    for c in clips:
        k = key(c)
        total[k] += 1
        parts.setdefault(k, Counter())[c.split] += 1
    if set(total) == {""}:
        return {}
    names = [n for n in order if n in total] + sorted(n for n in total if n not in order)
    return {n: {"clips": total[n], **{s: parts[n][s] for s in ("train", "validation", "test")}} for n in names}


def _notes(report: dict, *, rates: Counter, rate_of: dict[str, int], multichannel: list[str],
           clips: tuple[ClipRecord, ...]) -> list[str]:
    notes: list[str] = []
    if report["unreadable_files"]:
        notes.append(f"{report['unreadable_files']} file(s) cannot be read; a run skips them (see 'Unreadable')")
    if len(rates) > 1:
        common = rates.most_common(1)[0][0]
        odd = [p for p, r in rate_of.items() if r != common]
        examples = ", ".join(f"{Path(p).name} ({rate_of[p]} Hz)" for p in odd[:_EXAMPLES])
        notes.append(f"{len(odd)} file(s) differ from the most common sample rate {common} Hz, e.g. {examples}; "
                     "they are resampled when decoded")
    if multichannel:
        examples = ", ".join(Path(p).name for p in multichannel[:_EXAMPLES])
        notes.append(f"{len(multichannel)} multi-channel file(s), e.g. {examples}; they are mixed down to mono")
    if report["short_clips"]:
        s = report["short_clips"]
        examples = ", ".join(f"{Path(x['path']).name} ({x['duration_s']:.2f} s)" for x in s[:_EXAMPLES])
        notes.append(f"{len(s)} clip(s) shorter than {report['short_clip_s']:g} s, e.g. {examples}; "
                     "they are zero-padded to one patch")
    dupes = [p for p, n in Counter(str(c.path) for c in clips).items() if n > 1]
    if dupes:
        notes.append(f"{len(dupes)} file(s) are listed more than once, e.g. {Path(dupes[0]).name}")
    unseen = [d for d, n in report["devices"].items() if n["train"] == 0]
    if unseen:
        notes.append(f"device(s) {', '.join(unseen)} appear only outside the train split (unseen devices)")
    if not report["train_clips"] or not report["validation_clips"] or len(report["classes"]) < 2:
        notes.append("a search needs two classes and clips in train and validation; this set can be scored with "
                     "asc-search validate (every clip) but not searched")
    if not report["test_clips"]:
        notes.append("no test split: a run reports validation (selection) figures only")
    for name, counts in report["classes"].items():
        if counts["train"] == 0 or counts["validation"] == 0:
            part = "train" if counts["train"] == 0 else "validation"
            notes.append(f"class {name!r} has no clip in the {part} split")
    return notes


def format_check(report: dict) -> str:
    """Readable multi-line text of a ``check_dataset`` report.

    Args:
        report: The dict returned by ``check_dataset``.

    Returns:
        The text, without a trailing newline.
    """
    r = report
    lines = [
        f"Dataset: {r['source']}",
        f"Layout: {_LAYOUT_NAMES.get(r['layout'], r['layout'] or 'unknown')}",
        f"Split: {r['split_rule']}",
        f"Clips: {r['clips']} in the splits ({r['train_clips']} train, {r['validation_clips']} validation, "
        f"{r.get('test_clips', 0)} test); "
        f"{r['readable_clips']} readable, {r['unreadable_files']} unreadable; "
        f"{r['left_out_clips']} left out by the layout",
        "",
    ]
    for title, key in (("Classes", "classes"), ("Folds/splits", "groups"), ("Devices", "devices"),
                       ("Cities", "cities")):
        lines += _format_table(f"{title} ({len(r[key])})", r[key])
    if lines[-1]:
        lines.append("")
    d = r["duration_s"]
    lines.append("Durations: none readable" if d is None else
                 f"Durations: min {d['min']:.2f} s, median {d['median']:.2f} s, max {d['max']:.2f} s")
    lines.append("Sample rates: " + (", ".join(f"{k} Hz: {v}" for k, v in r["sample_rates_hz"].items()) or "none"))
    names = {1: "mono", 2: "stereo"}
    lines.append("Channels: " + (", ".join(f"{k} ({names.get(int(k), 'multi')}): {v}"
                                           for k, v in r["channels"].items()) or "none"))
    lines += [f"Clips shorter than {r['short_clip_s']:g} s: {len(r['short_clips'])}", ""]
    lines += _format_list(f"Unreadable files ({r['unreadable_files']})",
                          [f"{u['path']}: {u['reason']}" for u in r["unreadable"]])
    left = [f"{n} {reason}" for reason, n in r["left_out_reasons"].items()]
    left += [f"e.g. {p}" for p in r["left_out_examples"]]
    lines += _format_list(f"Left out by the layout ({r['left_out_clips']})", left)
    lines += _format_list(f"Notes ({len(r['notes'])})", r["notes"])
    return "\n".join(lines).rstrip()


def _format_table(title: str, table: dict[str, dict[str, int]]) -> list[str]:
    if not table:
        return [f"{title}: none in this layout"]
    width = max(len(title), *(len(str(n)) + 2 for n in table))
    out = [f"{title:<{width}}  {'clips':>7}  {'train':>7}  {'validation':>10}  {'test':>7}"]
    out += [f"  {str(n):<{width - 2}}  {c['clips']:>7}  {c['train']:>7}  {c['validation']:>10}  {c.get('test', 0):>7}"
            for n, c in table.items()]
    return out + [""]


def _format_list(title: str, items: list[str]) -> list[str]:
    if not items:
        return [f"{title}: none"]
    shown = [f"  - {x}" for x in items[:_LIST_LIMIT]]
    if len(items) > _LIST_LIMIT:
        shown.append(f"  ... and {len(items) - _LIST_LIMIT} more")
    return [f"{title}:", *shown]
