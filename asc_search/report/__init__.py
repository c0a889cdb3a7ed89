"""Report: Pareto plots (PNG, self-contained HTML), hypervolume, run report; reading a run directory back."""

from asc_search.report._html import plot_pareto_html
from asc_search.report._plots import pareto_figure, plot_hypervolume, plot_pareto
from asc_search.report._report import hypervolume_by_trial, report_run, write_report
from asc_search.report._rundir import LoadedRun, load_run

__all__ = [
    "LoadedRun",
    "hypervolume_by_trial",
    "load_run",
    "pareto_figure",
    "plot_hypervolume",
    "plot_pareto",
    "plot_pareto_html",
    "report_run",
    "write_report",
]
