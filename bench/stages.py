"""Each training stage of issue 5 against the same architecture without it, on ESC-10 (folds 1-2 train, fold 3
validation): mixup / SpecAugment on vs off; BASD and CSSD (16 kHz teacher -> 2 kHz student) students vs the same
student without distillation; 50 % cosine pruning + fine-tuning vs unpruned (bytes, MACs, accuracy); the best
ensemble under dcase2022 vs its best member (the candidates: every model trained above plus the same CNN on a
gammatone front-end, as the Mel/Gammatone/CQT-ensemble seed combines front-ends); QAT vs post-training
quantisation (INT8 accuracy and INT8/float agreement).

The architecture is the seed CNN of the pruned-ensemble paper (``lowcomplexity_cnn``, 14.9 K parameters, 5.4 M
MACs). Every variant is trained by the same code path as a search trial (``train_genome``), with the same seed
and epochs; each figure is the clip-level accuracy on fold 3 (80 clips), so one clip is 1.25 points. Several
seeds (``--seeds``) give the spread; the table prints the mean and each seed's value.

    .venv/bin/python bench/stages.py --epochs 15 --seeds 0,1
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import DATA, command_line, write_result  # noqa: E402

from asc_search.constraints import count_complexity, get_budget, patch_layout  # noqa: E402
from asc_search.data import decode_dataset, load_manifest  # noqa: E402
from asc_search.deploy import export_and_validate  # noqa: E402
from asc_search.frontends import FeatureCache  # noqa: E402
from asc_search.rundir import save_checkpoint  # noqa: E402
from asc_search.search import TrialSettings, train_genome  # noqa: E402
from asc_search.search_spaces import TrainingGenes, prunable_stages, reference_genome  # noqa: E402
from asc_search.trainers import EnsembleCandidate, classification_metrics, select_ensemble  # noqa: E402

STUDENT_RATE_HZ = 2000
TEACHER_RATE_HZ = 16000


def _variants() -> list[tuple[str, str, int, TrainingGenes]]:
    """(group, name, sample rate, training genes); the first of each group is its reference."""
    base = reference_genome("lowcomplexity_cnn", sample_rate_hz=TEACHER_RATE_HZ)
    ratios = tuple(0.5 if ok else 0.0 for ok in prunable_stages(base.arch))
    return [
        ("augmentation", "plain 16 kHz", TEACHER_RATE_HZ, TrainingGenes()),
        ("augmentation", "mixup", TEACHER_RATE_HZ, TrainingGenes(augmentations=("mixup",))),
        ("augmentation", "specaugment", TEACHER_RATE_HZ, TrainingGenes(augmentations=("specaugment",))),
        ("augmentation", "mixup + specaugment", TEACHER_RATE_HZ,
         TrainingGenes(augmentations=("mixup", "specaugment"))),
        ("basd", "plain 16 kHz", TEACHER_RATE_HZ, TrainingGenes()),
        ("basd", "BASD student", TEACHER_RATE_HZ, TrainingGenes(kd_teacher="basd")),
        ("cssd", "plain 2 kHz", STUDENT_RATE_HZ, TrainingGenes()),
        ("cssd", "CSSD student (16 kHz teacher)", STUDENT_RATE_HZ,
         TrainingGenes(kd_teacher="cssd", kd_teacher_rate_hz=TEACHER_RATE_HZ)),
        ("pruning", "unpruned", TEACHER_RATE_HZ, TrainingGenes()),
        ("pruning", "50 % cosine + fine-tune", TEACHER_RATE_HZ,
         TrainingGenes(prune_ratios=ratios, prune_criterion="cosine")),
        ("pool", "gammatone 16 kHz (ensemble candidate)", TEACHER_RATE_HZ, TrainingGenes()),
        ("qat", "PTQ (no QAT)", TEACHER_RATE_HZ, TrainingGenes()),
        ("qat", "QAT fine-tune", TEACHER_RATE_HZ, TrainingGenes(qat=True)),
    ]


def _int8(result, norm, genome, data, cache_dir: Path, n_classes: int) -> dict:
    """Export to INT8 and validate like the search's export step; INT8 accuracy and INT8/float agreement."""
    with tempfile.TemporaryDirectory() as tmp:
        model_pt = Path(tmp) / genome.genome_id / "model.pt"
        model_pt.parent.mkdir()
        save_checkpoint(model_pt, genome=genome, state_dict=result.state_dict, n_classes=n_classes,
                       class_names=list(data.class_names), norm=norm, metrics={})
        v = export_and_validate(model_pt, {genome.frontend.sample_rate_hz: data}, FeatureCache(cache_dir),
                                get_budget("dcase2022"))
    return {"int8_accuracy": v["int8"]["accuracy"], "int8_float_agreement": v["int8_float_agreement"],
            "int8_float_patch_agreement": v["int8_float_patch_agreement"],
            "tflm_float_agreement": v.get("tflm_float_agreement")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--groups", default="augmentation,basd,cssd,pruning,pool,qat",
                    help="stages to measure (the ensemble is selected from every model trained)")
    ap.add_argument("--name", default="stages", help="result file bench/results/<name>.json")
    ap.add_argument("--no-ensemble", action="store_true", help="skip the ensemble rows")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    manifest = load_manifest(DATA)
    data_by_rate = {r: decode_dataset(manifest, sample_rate_hz=r) for r in (STUDENT_RATE_HZ, TEACHER_RATE_HZ)}
    y_val = data_by_rate[TEACHER_RATE_HZ].labels[data_by_rate[TEACHER_RATE_HZ].is_validation]
    n_classes = data_by_rate[TEACHER_RATE_HZ].n_classes
    rows: list[dict] = []
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_stages_") as tmp:
        cache = FeatureCache(Path(tmp) / "cache")
        trained: dict[tuple[int, str, int], dict] = {}
        for seed in seeds:
            settings = TrialSettings(cache_dir=str(Path(tmp) / "cache"), epochs=args.epochs, patience=args.epochs,
                                     batch_size=64, seed=seed)
            for group, name, rate, genes in _variants():
                if group not in args.groups.split(","):
                    continue
                genome = dataclasses.replace(reference_genome("lowcomplexity_cnn", sample_rate_hz=rate),
                                             training=genes)
                if "gammatone" in name:  # the Mel/Gammatone/CQT-ensemble seed: front-ends carry complementary cues
                    genome = dataclasses.replace(genome, frontend=dataclasses.replace(genome.frontend,
                                                                                      kind="gammatone"))
                key = (rate, genome.genome_id, seed)
                if key not in trained:  # a reference shared by several groups is trained once a seed
                    data = data_by_rate[rate]
                    features, _ = cache.get(data, patch_layout(genome))
                    t0 = time.time()
                    trained_genome = train_genome(genome, data_by_rate, features, cache=cache, settings=settings)
                    result, stages = trained_genome.result, trained_genome.stages
                    c = count_complexity(genome, n_classes=n_classes)
                    m = classification_metrics(data.labels[data.is_validation], result.val_probs)
                    trained[key] = {"result": result, "norm": trained_genome.norm, "genome": genome, "train_s": time.time() - t0,
                                    "accuracy": m["accuracy"], "log_loss": m["log_loss"], "int8_bytes": c.int8_bytes,
                                    "macs": c.macs, "params": c.params, "stages": stages}
                t = trained[key]
                if group == "qat" and "int8_accuracy" not in t:  # also when another group trained it already
                    t |= _int8(t["result"], t["norm"], genome, data_by_rate[rate], Path(tmp) / "cache", n_classes)
                rows.append({"group": group, "variant": name, "seed": seed, "sample_rate_hz": rate,
                             **{k: v for k, v in t.items() if k not in ("result", "norm", "genome")}})
                print(f"seed {seed} {group:12s} {name:32s} acc {t['accuracy']:.3f} ({t['train_s']:.0f} s)",
                      flush=True)
            if args.no_ensemble:
                continue
            # the best ensemble under dcase2022 over every distinct model this seed trained
            cands = [EnsembleCandidate(trial_id=f"{t['genome'].summary()} @{r}", int8_bytes=t["int8_bytes"],
                                       macs=t["macs"], params=t["params"], val_probs=t["result"].val_probs)
                     for (r, _gid, s), t in trained.items() if s == seed]
            sel = select_ensemble(cands, y_val, get_budget("dcase2022"), n_bootstrap=200, seed=seed)
            best = sel.best_single or {}
            rows.append({"group": "ensemble", "variant": "best single member", "seed": seed,
                         "accuracy": best.get("val_metrics", {}).get("accuracy"), "int8_bytes": best.get("int8_bytes"),
                         "macs": best.get("macs"), "members": [best.get("trial_id")]})
            rows.append({"group": "ensemble", "variant": f"ensemble ({sel.fusion}, {len(sel.members)} member(s))",
                         "seed": seed, "accuracy": (sel.val_metrics or {}).get("accuracy"),
                         "int8_bytes": sel.int8_bytes, "macs": sel.macs, "members": list(sel.members),
                         "candidates": len(cands), "reason": sel.reason})
    table = _table(rows)
    print(table)
    out = write_result(args.name, {"epochs": args.epochs, "seeds": seeds, "rows": rows, "table": table,
                                  "wall_s": round(time.time() - t_start, 1),
                                  "architecture": "lowcomplexity_cnn (pruned-ensemble seed CNN)",
                                  "validation": "ESC-10 fold 3, 80 clips (1 clip = 0.0125)"}, command_line())
    print(f"wrote {out}")


def _table(rows: list[dict]) -> str:
    """Markdown table: one line a (group, variant), mean accuracy over seeds and each seed's value."""
    lines = ["| stage | variant | accuracy (mean) | per seed | INT8 bytes | MACs / s | INT8 acc / agreement |",
             "|---|---|---|---|---|---|---|"]
    seen: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        seen.setdefault((r["group"], r["variant"] if r["group"] != "ensemble" else r["variant"].split(" (")[0]),
                        []).append(r)
    for (group, variant), rs in seen.items():
        accs = [r["accuracy"] for r in rs if r.get("accuracy") is not None]
        mean = f"{statistics.mean(accs):.3f}" if accs else "-"
        per = " / ".join(f"{a:.3f}" for a in accs)
        if group == "ensemble" and rs[0]["variant"].startswith("ensemble"):
            variant = "ensemble (fusion, members, INT8 bytes per seed: " + "; ".join(
                f"{r['variant'].split('(')[1].split(',')[0]}, {len(r['members'])}, {r['int8_bytes']:,}" for r in rs) + ")"
        q = ""
        if rs[0].get("int8_accuracy") is not None:
            q = " / ".join(f"{r['int8_accuracy']:.3f}, {r['int8_float_patch_agreement']:.3f}" for r in rs)
        b, m = rs[0].get("int8_bytes"), rs[0].get("macs")
        name = variant
        lines.append(f"| {group} | {name} | {mean} | {per} | {b:,} | {m:,} | {q} |" if b is not None else
                     f"| {group} | {name} | {mean} | {per} | - | - | {q} |")
    return "\n".join(lines)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
