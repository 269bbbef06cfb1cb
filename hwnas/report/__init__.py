"""Reports: the profile table, per-layer latency reports, plots."""

from hwnas.report.latency import latency_report
from hwnas.report.plots import plot_pareto
from hwnas.report.summary import ProfileSummary, profile

__all__ = ["ProfileSummary", "latency_report", "plot_pareto", "profile"]
