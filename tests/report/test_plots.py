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
