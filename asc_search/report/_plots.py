"""Pareto plots (matplotlib, Agg): accuracy against MACs and against INT8 KB, budget lines, front highlighted."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from asc_search._io import atomic_write  # noqa: E402
from asc_search.constraints import Budget  # noqa: E402


def plot_pareto(rows: list[dict], budget: Budget, path: str | Path, *, title: str = "") -> Path:
    """Write ``pareto.png``: two panels (accuracy vs M MACs per 1 s, accuracy vs INT8 KB).

    Completed trials are dots, the Pareto front is a red line with labelled points, rejected
    candidates are grey crosses on the bottom axis (never trained), failed trials are black triangles,
    budget limits are dashed vertical lines with the infeasible side shaded.

    Args:
        rows: Trial rows as in ``trials.csv``.
        budget: The run's budget.
        path: Output PNG.
    """
    done = [r for r in rows if r["status"] == "completed"]
    front = sorted((r for r in done if r.get("on_front")), key=lambda r: r["macs"])
    rejected = [r for r in rows if r["status"] == "rejected"]
    failed = [r for r in rows if r["status"] in ("failed", "stopped") and r.get("macs") not in ("", None)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=120)
    panels = [("macs", 1e6, "M MACs per 1 s of audio", budget.max_macs),
              ("int8_bytes", 1e3, "INT8 parameter memory (KB)", budget.max_int8_bytes)]
    for ax, (key, scale, label, limit) in zip(axes, panels, strict=True):
        ax.scatter([r[key] / scale for r in done], [r["best_val_accuracy"] for r in done], s=28, c="tab:blue",
                   alpha=0.7, label=f"trained ({len(done)})", zorder=3)
        if rejected:
            ax.scatter([r[key] / scale for r in rejected], [0.0] * len(rejected), marker="x", c="grey",
                       s=24, alpha=0.6, label=f"rejected before training ({len(rejected)})", zorder=2)
        if failed:
            ax.scatter([r[key] / scale for r in failed], [0.0] * len(failed), marker="v", c="black", s=28,
                       label=f"failed ({len(failed)})", zorder=2)
        if front:
            pts = sorted(front, key=lambda r: r[key])
            ax.step([r[key] / scale for r in pts], [r["best_val_accuracy"] for r in pts], where="post",
                    c="tab:red", lw=1.2, zorder=4)
            ax.scatter([r[key] / scale for r in pts], [r["best_val_accuracy"] for r in pts], s=60,
                       facecolors="none", edgecolors="tab:red", lw=1.6, label=f"Pareto front ({len(front)})",
                       zorder=5)
            for r in pts:
                ax.annotate(r["trial_id"].split("_")[-1], (r[key] / scale, r["best_val_accuracy"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color="tab:red")
        if limit is not None:
            ax.axvline(limit / scale, ls="--", c="tab:orange", lw=1.2, label=f"{budget.name} limit")
            right = max([limit / scale * 1.05] + [r[key] / scale * 1.05 for r in done + rejected + failed])
            ax.axvspan(limit / scale, right, color="tab:orange", alpha=0.08)
            ax.set_xlim(0, right)
        else:
            ax.set_xlim(left=0)
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(-0.03, 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title or f"Pareto front under {budget.name}")
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", metadata={"Software": None}))
    plt.close(fig)
    return out
