"""Report: Pareto plot and run report."""

from asc_search.report._plots import plot_pareto
from asc_search.report._report import write_report

__all__ = ["plot_pareto", "write_report"]
