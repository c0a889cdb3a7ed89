"""Report: Pareto plots (PNG, self-contained HTML), hypervolume and the run report, rebuilt from the run directory."""

from asc_search.report._html import plot_pareto_html
from asc_search.report._plots import pareto_figure, plot_hypervolume, plot_pareto
from asc_search.report._report import hypervolume_by_trial, report_run, write_report

__all__ = [
    "hypervolume_by_trial",
    "pareto_figure",
    "plot_hypervolume",
    "plot_pareto",
    "plot_pareto_html",
    "report_run",
    "write_report",
]
