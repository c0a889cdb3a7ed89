import numpy as np
from matplotlib.image import imread

from asc_search.constraints import get_budget
from asc_search.report import plot_pareto


def _row(tid, status, acc, macs, nbytes, front=False):
    return {"trial_id": tid, "status": status, "best_val_accuracy": acc, "macs": macs, "int8_bytes": nbytes,
            "on_front": front}


def test_pareto_png_is_written_with_two_panels(tmp_path):
    rows = [_row("a", "completed", 0.8, 5e6, 20_000, True), _row("b", "completed", 0.6, 10e6, 30_000),
            _row("c", "completed", 0.85, 20e6, 60_000, True), _row("r", "rejected", "", 90e6, 200_000)]
    path = plot_pareto(rows, get_budget("dcase2022"), tmp_path / "pareto.png")
    img = imread(path)
    assert img.shape[1] > img.shape[0] * 2  # two panels side by side
    orange = (img[..., 0] > 0.9) & (np.abs(img[..., 1] - 0.5) < 0.08) & (img[..., 2] < 0.2)
    assert orange.sum() > 200  # the dashed budget lines are drawn
    red = (img[..., 0] > 0.75) & (img[..., 1] < 0.25) & (img[..., 2] < 0.25)
    assert red.sum() > 100  # front markers


def test_pareto_figure_has_axes_budget_lines_and_labelled_points():
    import matplotlib.pyplot as plt

    from asc_search.report import pareto_figure

    rows = [_row("aaaa0001", "completed", 0.8, 5e6, 20_000, True), _row("bbbb0002", "completed", 0.6, 10e6, 30_000),
            _row("cccc0003", "completed", 0.85, 20e6, 60_000, True), _row("r", "rejected", "", 90e6, 200_000)]
    fig = pareto_figure(rows, get_budget("dcase2022"), exported={"aaaa0001"}, knee="aaaa0001")
    ax_macs, ax_kb = fig.axes
    assert ax_macs.get_xlabel() == "M MACs per 1 s of audio" and ax_kb.get_xlabel() == "INT8 parameter memory (KB)"
    assert ax_macs.get_ylabel() == ax_kb.get_ylabel() == "validation accuracy"
    vlines = [ln.get_xdata()[0] for ax in (ax_macs,) for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert vlines == [30.0]
    assert [ln.get_xdata()[0] for ln in ax_kb.get_lines() if ln.get_linestyle() == "--"] == [128.0]
    labels = {t.get_text() for t in ax_macs.texts}
    assert labels == {"aaaa0001 INT8 (knee)", "cccc0003"}
    legend = [t.get_text() for t in ax_macs.get_legend().get_texts()]
    assert any(t.startswith("rejected before training (1") for t in legend)
    assert any(t.startswith("Pareto front, 3 objectives (2)") for t in legend)
    plt.close(fig)


def test_latency_budget_adds_a_latency_panel():
    import matplotlib.pyplot as plt

    from asc_search.report import pareto_figure

    rows = [_row("aaaa0001", "completed", 0.8, 5_000_000, 20_000, True)]
    fig = pareto_figure(rows, get_budget("phone"))
    assert len(fig.axes) == 3 and "latency" in fig.axes[2].get_xlabel()
    assert [ln.get_xdata()[0] for ln in fig.axes[2].get_lines() if ln.get_linestyle() == "--"] == [250.0]
    plt.close(fig)
