"""Pareto plots (matplotlib, Agg): accuracy against MACs and against INT8 KB, budget lines, front highlighted."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from asc_search._io import atomic_write  # noqa: E402
from asc_search._pareto import pareto_front  # noqa: E402
from asc_search.constraints import Budget  # noqa: E402


def plot_pareto(rows: list[dict], budget: Budget, path: str | Path, *, exported: set[str] | None = None,
                knee: str | None = None, title: str = "") -> Path:
    """Write ``pareto.png`` (see ``pareto_figure``).

    Args:
        rows: Trial rows as in ``trials.csv``.
        budget: The run's budget.
        path: Output PNG.
        exported: Trial ids exported to INT8 TFLite.
        knee: Trial id of the knee point.
        title: Figure title.
    """
    fig = pareto_figure(rows, budget, exported=exported, knee=knee, title=title)
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", metadata={"Software": None}))
    plt.close(fig)
    return out


def pareto_figure(rows: list[dict], budget: Budget, *, exported: set[str] | None = None, knee: str | None = None,
                  title: str = ""):
    """The Pareto figure: two panels (accuracy vs M MACs per 1 s, accuracy vs INT8 KB).

    Completed trials are dots; members of the 3-objective Pareto front are red circles with their trial
    id; the red step line is the front of the panel's own two objectives; rejected candidates are grey
    crosses on the bottom axis (never trained; those beyond the axis sit at its right edge); failed or
    stopped trials are black triangles; budget limits are dashed lines with the infeasible side shaded.

    Args:
        rows: Trial rows as in ``trials.csv``.
        budget: The run's budget.
        exported: Trial ids exported to INT8 TFLite (labelled "INT8").
        knee: Trial id of the knee point (labelled "knee").
        title: Figure title.

    Returns:
        The matplotlib figure (the caller saves and closes it).
    """
    if budget.max_latency_ms is not None:  # a third panel: accuracy against the device latency estimate
        rows = [{**r, "latency_ms": budget.latency_ms(r["macs"]) if isinstance(r.get("macs"), int) else ""}
                for r in rows]
    done = [r for r in rows if r["status"] == "completed"]
    front = sorted((r for r in done if r.get("on_front")), key=lambda r: r["macs"])
    rejected = [r for r in rows if r["status"] == "rejected"]
    failed = [r for r in rows if r["status"] in ("failed", "stopped") and r.get("macs") not in ("", None)]
    panels = [("macs", 1e6, "M MACs per 1 s of audio", budget.max_macs),
              ("int8_bytes", 1e3, "INT8 parameter memory (KB)", budget.max_int8_bytes)]
    if budget.max_latency_ms is not None:
        panels.append(("latency_ms", 1.0, f"estimated latency per 1 s on {budget.device} (ms)", budget.max_latency_ms))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), dpi=120)
    for ax, (key, scale, label, limit) in zip(axes, panels, strict=True):
        trained_x = [r[key] / scale for r in done]
        right = max(trained_x + [1e-9]) * 1.08
        if limit is not None:
            right = max(right, limit / scale * 1.6)
        edge = right * 0.985
        ax.scatter(trained_x, [r["best_val_accuracy"] for r in done], s=28, c="tab:blue",
                   alpha=0.7, label=f"trained ({len(done)})", zorder=3)
        if rejected:
            xs = [r[key] / scale for r in rejected]
            ax.scatter([min(v, edge) for v in xs], [0.0] * len(rejected), marker="x", c="grey", s=24, alpha=0.7,
                       label=f"rejected before training ({len(rejected)}; beyond the axis at its edge)", zorder=2)
        if failed:
            ax.scatter([min(r[key] / scale, edge) for r in failed], [0.0] * len(failed), marker="v", c="black", s=28,
                       label=f"failed or stopped ({len(failed)})", zorder=2)
        if done:
            idx = pareto_front([(r["best_val_accuracy"], r[key]) for r in done], ("max", "min"))
            pts = sorted((done[i] for i in idx), key=lambda r: r[key])
            xs = [r[key] / scale for r in pts] + [right]
            ys = [r["best_val_accuracy"] for r in pts]
            ax.step(xs, ys + ys[-1:], where="post", c="tab:red", lw=1.0, alpha=0.6, zorder=4,
                    label="front of this panel's two objectives")
        if front:
            ax.scatter([r[key] / scale for r in front], [r["best_val_accuracy"] for r in front], s=70,
                       facecolors="none", edgecolors="tab:red", lw=1.6,
                       label=f"Pareto front, 3 objectives ({len(front)})", zorder=5)
            for r in front:
                text = str(r["trial_id"])[-8:]
                if exported and r["trial_id"] in exported:
                    text += " INT8"
                if r["trial_id"] == knee:
                    text += " (knee)"
                ax.annotate(text, (r[key] / scale, r["best_val_accuracy"]), textcoords="offset points",
                            xytext=(5, -3), fontsize=7, color="tab:red",
                            fontweight="bold" if r["trial_id"] == knee else "normal")
        if limit is not None:
            ax.axvline(limit / scale, ls="--", c="tab:orange", lw=1.4, label=f"{budget.name} limit")
            ax.axvspan(limit / scale, right, color="tab:orange", alpha=0.08)
        ax.set_xlim(0, right)
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(-0.03, 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title or f"Pareto front under {budget.name}")
    fig.tight_layout()
    return fig


def plot_hypervolume(values: list[float], path: str | Path, *, title: str = "") -> Path:
    """Write ``hypervolume.png``: normalised (accuracy, MACs, INT8 bytes) hypervolume after each trained candidate.

    Args:
        values: Hypervolume after each completed trial, in order of completion.
        path: Output PNG.
        title: Figure title.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, c="tab:blue")
    ax.set_xlabel("trained candidates")
    ax.set_ylabel("hypervolume (accuracy x MACs x INT8 bytes), normalised")
    ax.set_ylim(0, max([1e-3] + values) * 1.1)
    ax.grid(alpha=0.3)
    ax.set_title(title or "hypervolume against trial count")
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", metadata={"Software": None}))
    plt.close(fig)
    return out
