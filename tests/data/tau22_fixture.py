"""A small dataset in the TAU Urban Acoustic Scenes 2022 Mobile development layout, built from real audio.

The TAU22 set itself (230,350 clips, 44.1 kHz) is too big to ship with the tests, so ``build_tau22_fixture``
cuts 1-second pieces out of the real ESC-10 recordings of ``../shared/data/esc10-dev`` and writes them, in a
temporary folder, exactly as TAU22 lays out its files:

```
<root>/audio/<scene>-<city>-<location>-<segment>-<n>-<device>.wav
<root>/meta.csv                          filename  scene_label  identifier  source_label  (TAB-separated)
<root>/evaluation_setup/fold1_train.csv     filename  scene_label
<root>/evaluation_setup/fold1_evaluate.csv  filename  scene_label
<root>/evaluation_setup/fold1_test.csv      filename
```

Every clip of one ESC-10 class becomes one scene (``SCENE_OF_ESC_CLASS``), so the class structure is real and
a classifier can learn it. One ESC recording is one "location" (``identifier`` ``<city>-<location>``); train
pieces come from ESC folds 1-2 and evaluate pieces from fold 3, so no recording is in both splits (the ESC
folds keep recordings of one Freesound source together, as TAU22 keeps locations apart). Devices ``a``, ``b``,
``c`` appear in both splits and ``s1``, ``s2`` only in the evaluate split, as in TAU22; each device colours the
audio with a small fixed filter so that devices differ. A few pieces per scene (device ``s3``) are listed in
``meta.csv`` but in neither setup file, as TAU22's test-only clips are.

Nothing is copied into the repository: call this with a pytest ``tmp_path``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ESC10_RATE_HZ = 16_000
SCENE_OF_ESC_CLASS = {  # ordered by how much audible audio the class has: sneezing (little) last
    "dog": "airport",
    "rain": "bus",
    "sea_waves": "metro",
    "crying_baby": "metro_station",
    "clock_tick": "park",
    "helicopter": "public_square",
    "chainsaw": "shopping_mall",
    "crackling_fire": "street_pedestrian",
    "rooster": "street_traffic",
    "sneezing": "tram",
}
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
TRAIN_DEVICES = ("a", "b", "c")
EVALUATE_DEVICES = ("a", "b", "c", "s1", "s2")
LEFT_OUT_DEVICE = "s3"
_MIN_PEAK = 0.01  # a piece whose peak is below this (-40 dBFS) is treated as silence and not used
_FIRS = {  # a small fixed colouring per device (FIR taps at 16 kHz), so that devices sound different
    "a": np.array([1.0]),
    "b": np.array([0.25, 0.25, 0.25, 0.25]),
    "c": np.array([1.0, -0.9]),
    "s1": np.array([0.6, 0.3, 0.15, 0.075, 0.0375]),
    "s2": np.array([0.7, -0.5]),
    "s3": np.array([0.5]),
}


def build_tau22_fixture(root: Path, esc10: Path, *, n_scenes: int = 4, clips_per_scene: int = 24,
                        clip_s: float = 1.0, sample_rate_hz: int = 16_000, evaluate_fraction: float = 0.25,
                        left_out_per_scene: int = 2, n_cities: int = 4) -> Path:
    """Write a TAU22-layout dataset into ``root`` from real ESC-10 audio and return ``root``.

    Args:
        root: Folder to write into (created; use a temporary folder).
        esc10: The ``esc10-dev`` folder (``metadata.csv`` with ``filename``, ``label``, ``fold``; 16 kHz FLAC).
        n_scenes: Number of scenes, 2-10; scene ``i`` holds the pieces of the ``i``-th ESC-10 class of
            ``SCENE_OF_ESC_CLASS``.
        clips_per_scene: Clips per scene in the two splits together (default 24). ESC-10 holds enough
            audible 1-s pieces for up to about 70 with ``n_scenes <= 8``, 48 with 9 and 26 with 10.
        clip_s: Length of each clip in seconds (default 1.0, as TAU22).
        sample_rate_hz: Sample rate of the WAV files; other than 16000 (e.g. 44100, as TAU22) the pieces are
            resampled with soxr.
        evaluate_fraction: Share of each scene's clips in ``fold1_evaluate.csv`` (rounded, at least 1).
        left_out_per_scene: Clips per scene listed in ``meta.csv`` only (device ``s3``).
        n_cities: Number of cities, 1-10; recording ``k`` of a class is in city ``CITIES[k % n_cities]``.

    Returns:
        ``root``.

    Raises:
        ValueError: A count is out of range, or ESC-10 has too little audio for the pieces asked for.
    """
    if not 2 <= n_scenes <= len(SCENE_OF_ESC_CLASS):
        raise ValueError(f"n_scenes must be in 2..{len(SCENE_OF_ESC_CLASS)}, got {n_scenes}")
    if not 1 <= n_cities <= len(CITIES):
        raise ValueError(f"n_cities must be in 1..{len(CITIES)}, got {n_cities}")
    n_eval = max(1, round(clips_per_scene * evaluate_fraction))
    n_train = clips_per_scene - n_eval
    if n_train < 1 or left_out_per_scene < 0 or clip_s <= 0:
        raise ValueError(f"need >= 1 train clip per scene, left_out_per_scene >= 0 and clip_s > 0; got "
                         f"clips_per_scene={clips_per_scene}, evaluate_fraction={evaluate_fraction}, "
                         f"left_out_per_scene={left_out_per_scene}, clip_s={clip_s}")
    with open(esc10 / "metadata.csv", newline="") as f:
        esc_rows = list(csv.DictReader(f))
    piece = int(round(clip_s * ESC10_RATE_HZ))
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    meta, train, evaluate = [], [], []
    for esc_class, scene in list(SCENE_OF_ESC_CLASS.items())[:n_scenes]:
        recordings = sorted((r for r in esc_rows if r["label"] == esc_class), key=lambda r: r["filename"])
        location = {r["filename"]: k for k, r in enumerate(recordings)}
        plan = [
            (False, n_train, TRAIN_DEVICES, [r for r in recordings if r["fold"] in ("1", "2")]),
            (True, n_eval + left_out_per_scene, EVALUATE_DEVICES, [r for r in recordings if r["fold"] == "3"]),
        ]
        for is_eval, n_needed, devices, rows in plan:
            pieces = _loudest_pieces(esc10, rows, n_needed, piece)
            if len(pieces) < n_needed:
                raise ValueError(f"ESC-10 class {esc_class!r} has {len(pieces)} pieces of {clip_s} s for this split, "
                                 f"{n_needed} asked for; lower clips_per_scene or clip_s")
            for i, (row, n, wave) in enumerate(pieces):
                left_out = is_eval and i >= n_eval
                device = LEFT_OUT_DEVICE if left_out else devices[i % len(devices)]
                loc = location[row["filename"]]
                city = CITIES[loc % n_cities]
                name = f"audio/{scene}-{city}-{loc}-0-{n}-{device}.wav"
                _write(root / name, _colour(wave, device), sample_rate_hz)
                meta.append((name, scene, f"{city}-{loc}", device))
                if not left_out:
                    (evaluate if is_eval else train).append((name, scene))
    setup = root / "evaluation_setup"
    setup.mkdir(exist_ok=True)
    _write_tsv(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), sorted(meta))
    _write_tsv(setup / "fold1_train.csv", ("filename", "scene_label"), sorted(train))
    _write_tsv(setup / "fold1_evaluate.csv", ("filename", "scene_label"), sorted(evaluate))
    _write_tsv(setup / "fold1_test.csv", ("filename",), sorted((n,) for n, _ in evaluate))
    return root


def _loudest_pieces(esc10: Path, rows: list[dict], n_needed: int, piece: int) -> list[tuple[dict, int, np.ndarray]]:
    """``(recording row, piece index, samples)`` of audible pieces, the loudest of every recording first."""
    ranked: list[list[tuple[dict, int, np.ndarray]]] = []
    for row in rows:
        x, rate = sf.read(esc10 / row["filename"], dtype="float32", always_2d=True)
        if rate != ESC10_RATE_HZ:
            raise ValueError(f"{row['filename']} is at {rate} Hz; esc10-dev is expected at {ESC10_RATE_HZ} Hz")
        x = x.mean(axis=1)
        cuts = [x[k * piece:(k + 1) * piece] for k in range(len(x) // piece)]
        energy = [float(np.mean(c ** 2)) for c in cuts]
        # many ESC clips are an event padded with digital silence: keep pieces within 10 dB of the loudest
        audible = [k for k, c in enumerate(cuts) if energy[k] >= 0.1 * max(energy) and np.abs(c).max() >= _MIN_PEAK]
        ranked.append([(row, k, cuts[k]) for k in sorted(audible, key=lambda k: -energy[k])])
    depth = max((len(r) for r in ranked), default=0)
    out = [r[rank] for rank in range(depth) for r in ranked if rank < len(r)]
    return out[:n_needed]


def _colour(wave: np.ndarray, device: str) -> np.ndarray:
    y = np.convolve(wave, _FIRS[device])[:len(wave)]
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _write(path: Path, wave: np.ndarray, sample_rate_hz: int) -> None:
    if sample_rate_hz != ESC10_RATE_HZ:
        wave = soxr.resample(wave, ESC10_RATE_HZ, sample_rate_hz, quality="HQ").astype(np.float32)
    sf.write(path, np.clip(wave, -1.0, 1.0), sample_rate_hz, subtype="PCM_16")


def _write_tsv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


BAD_KINDS = ("corrupt", "truncated", "empty", "other_rate", "missing")
"""The kinds of bad file ``build_tau22_scale_fixture`` plants: random bytes, a WAV cut inside its header, a file of
0 bytes, a WAV at 22,050 Hz (a rate the set does not have), and a listed file that does not exist."""


def build_tau22_scale_fixture(root: Path, esc10: Path, n_clips: int, *, sample_rate_hz: int = 44_100,
                              bad_fraction: float = 0.0, seed: int = 0) -> dict:
    """Write a TAU22-layout set of ``n_clips`` one-second clips into ``root``, cut from the real ESC-10 audio,
    at the size users have (``bench/scale.py``, the memory tests).

    The 10 scenes take the audible 1-s pieces of the 10 ESC-10 classes (train pieces from ESC folds 1-2, evaluate
    pieces from fold 3, as ``build_tau22_fixture``); clip ``k`` of a split repeats piece ``k % pieces`` of its
    scene with device ``k``'s colouring (``a``, ``b``, ``c`` in train; also ``s1``, ``s2`` in evaluate), a gain
    that varies with ``k``, and city ``k % 10``. The split is TAU22's: 139,620 / 169,300 of the clips in
    ``fold1_train.csv``, the rest in ``fold1_evaluate.csv``. The WAVs are 16-bit PCM (TAU22: 24-bit; 1 s at
    44.1 kHz is 88 KB here, so 230,350 clips take about 20 GB: use a folder outside the repository and delete it).

    Args:
        root: Folder to write into (created).
        esc10: The ``esc10-dev`` folder.
        n_clips: Clips listed in the two setup files (>= 20).
        sample_rate_hz: Rate of the WAV files (TAU22: 44,100).
        bad_fraction: Share of the listed clips replaced by a bad file, the kinds of ``BAD_KINDS`` in turn.
        seed: Which clips are bad.

    Returns:
        ``{"root", "clips", "train", "evaluate", "bad": {path: kind}, "bytes"}``.

    Raises:
        ValueError: ``n_clips`` < 20 or ``bad_fraction`` outside [0, 0.5].
    """
    if n_clips < 20 or not 0 <= bad_fraction <= 0.5:
        raise ValueError(f"need n_clips >= 20 and 0 <= bad_fraction <= 0.5, got {n_clips}, {bad_fraction}")
    with open(esc10 / "metadata.csv", newline="") as f:
        esc_rows = list(csv.DictReader(f))
    n_train = round(n_clips * 139_620 / 169_300)
    counts = {False: n_train, True: n_clips - n_train}
    piece = ESC10_RATE_HZ
    (root / "audio").mkdir(parents=True, exist_ok=True)
    meta, listed = [], {False: [], True: []}
    n_scenes = len(SCENE_OF_ESC_CLASS)
    written = 0
    for s, (esc_class, scene) in enumerate(SCENE_OF_ESC_CLASS.items()):
        recordings = [r for r in esc_rows if r["label"] == esc_class]
        for is_eval in (False, True):
            rows = [r for r in recordings if (r["fold"] == "3") == is_eval]
            pieces = [w for _, _, w in _loudest_pieces(esc10, rows, 10 ** 9, piece)]
            devices = EVALUATE_DEVICES if is_eval else TRAIN_DEVICES
            bank = {(d, p): _resampled(_colour(w, d), sample_rate_hz) for d in devices for p, w in enumerate(pieces)}
            n_here = counts[is_eval] // n_scenes + (s < counts[is_eval] % n_scenes)
            for k in range(n_here):
                device, city = devices[k % len(devices)], CITIES[k % len(CITIES)]
                wave = bank[(device, k % len(pieces))] * np.float32(0.5 + 0.5 * ((k * 7919) % 97) / 96)
                name = f"audio/{scene}-{city}-{s}{k // 1000}-{k}-{int(is_eval)}-{device}.wav"
                sf.write(root / name, wave, sample_rate_hz, subtype="PCM_16")
                written += 1
                meta.append((name, scene, f"{city}-{s}{k // 1000}", device))
                listed[is_eval].append((name, scene))
    bad = _plant_bad_files(root, [n for split in listed.values() for n, _ in split], bad_fraction, seed)
    setup = root / "evaluation_setup"
    setup.mkdir(exist_ok=True)
    _write_tsv(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), sorted(meta))
    _write_tsv(setup / "fold1_train.csv", ("filename", "scene_label"), sorted(listed[False]))
    _write_tsv(setup / "fold1_evaluate.csv", ("filename", "scene_label"), sorted(listed[True]))
    _write_tsv(setup / "fold1_test.csv", ("filename",), sorted((n,) for n, _ in listed[True]))
    size = sum(p.stat().st_size for p in (root / "audio").iterdir())
    return {"root": root, "clips": written, "train": len(listed[False]), "evaluate": len(listed[True]),
            "bad": bad, "bytes": size}


def _resampled(wave: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    if sample_rate_hz != ESC10_RATE_HZ:
        wave = soxr.resample(wave, ESC10_RATE_HZ, sample_rate_hz, quality="HQ")
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _plant_bad_files(root: Path, names: list[str], fraction: float, seed: int) -> dict[str, str]:
    """Replace ``fraction`` of ``names`` by bad files, the kinds of ``BAD_KINDS`` in turn; ``{path: kind}``."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(names))[:int(round(fraction * len(names)))]
    bad = {}
    for j, i in enumerate(sorted(chosen)):
        path, kind = root / names[i], BAD_KINDS[j % len(BAD_KINDS)]
        if kind == "corrupt":
            path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        elif kind == "truncated":
            path.write_bytes(path.read_bytes()[:30])
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "other_rate":
            sf.write(path, np.zeros(22_050, dtype=np.float32) + 0.01, 22_050, subtype="PCM_16")
        else:
            path.unlink()
        bad[str(path)] = kind
    return bad
