"""Interactive Pareto plot (plotly), fully self-contained: plotly.js is inlined, nothing is fetched."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from asc_search._io import write_text
from asc_search.constraints import Budget

_CLICK_JS = """
var plot = document.getElementById('{plot_id}');
plot.on('plotly_click', function(data) {
  var url = data.points[0].customdata && data.points[0].customdata[0];
  if (url) { window.open(url, '_blank'); }
});
"""


def _hover(r: dict) -> str:
    acc = r.get("best_val_accuracy")
    acc_text = f"{acc:.3f}" if isinstance(acc, float) else "not trained"
    lines = [f"<b>{r['trial_id']}</b> ({r['status']})", r.get("summary", ""), f"accuracy {acc_text}",
             f"log loss {r.get('best_val_log_loss', '')}", f"UAR {r.get('best_val_uar', '')}",
             f"{r['macs'] / 1e6:.2f} M MACs per 1 s", f"{r['int8_bytes']:,} INT8 bytes", f"{r.get('params', '')} params"]
    if r.get("reasons"):
        lines.append(f"rejected: {r['reasons']}")
    if r.get("error"):
        lines.append(f"error: {r['error']}")
    return "<br>".join(lines)


def plot_pareto_html(rows: list[dict], budget: Budget, path: str | Path, *, exported: set[str] | None = None,
                     title: str = "") -> Path:
    """Write ``pareto.html``: accuracy against M MACs and against INT8 KB, one marker per candidate.

    Hover shows the genome summary and every metric; clicking an exported front member opens its
    ``models/<trial>/validation.json``. Rejected candidates sit at accuracy 0 (never trained). The file
    embeds plotly.js, so it works offline; its plot ``div`` has the fixed id ``pareto`` (deterministic output).

    Args:
        rows: Trial rows (typed, as ``load_run`` gives them).
        budget: The run's budget (limits drawn as dashed lines).
        path: Output HTML.
        exported: Trial ids with an exported model.
        title: Figure title.
    """
    exported = exported or set()
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("accuracy vs M MACs per 1 s", "accuracy vs INT8 KB"))
    groups = [
        ("trained", [r for r in rows if r["status"] == "completed" and not r.get("on_front")],
         {"color": "#1f77b4", "size": 8, "symbol": "circle"}),
        ("Pareto front", [r for r in rows if r.get("on_front")],
         {"color": "#d62728", "size": 11, "symbol": "circle-open", "line": {"width": 2}}),
        ("rejected before training", [r for r in rows if r["status"] == "rejected"],
         {"color": "#7f7f7f", "size": 7, "symbol": "x"}),
        ("failed or stopped", [r for r in rows if r["status"] in ("failed", "stopped")],
         {"color": "#000000", "size": 8, "symbol": "triangle-down"}),
    ]
    for col, (key, scale) in enumerate((("macs", 1e6), ("int8_bytes", 1e3)), start=1):
        for name, members, marker in groups:
            if not members:
                continue
            fig.add_trace(go.Scatter(
                x=[r[key] / scale for r in members],
                y=[r["best_val_accuracy"] if isinstance(r.get("best_val_accuracy"), float) else 0.0 for r in members],
                mode="markers", name=name, legendgroup=name, showlegend=col == 1, marker=marker,
                text=[_hover(r) for r in members], hoverinfo="text",
                customdata=[[f"models/{r['trial_id']}/validation.json" if r["trial_id"] in exported else ""]
                            for r in members],
            ), row=1, col=col)
        limit = budget.max_macs if key == "macs" else budget.max_int8_bytes
        if limit is not None:
            fig.add_vline(x=limit / scale, line={"dash": "dash", "color": "#ff7f0e"}, row=1, col=col)
    fig.update_yaxes(title_text="validation accuracy", range=[-0.03, 1.0])
    fig.update_xaxes(title_text="M MACs per 1 s of audio", row=1, col=1)
    fig.update_xaxes(title_text="INT8 parameter memory (KB)", row=1, col=2)
    fig.update_layout(title=title or f"Pareto front under {budget.name}", template="plotly_white", height=560,
                      width=1200, hoverlabel={"align": "left"})
    html = fig.to_html(include_plotlyjs=True, full_html=True, div_id="pareto",
                       post_script=_CLICK_JS.replace("{plot_id}", "pareto"), config={"displaylogo": False})
    return write_text(path, html)
