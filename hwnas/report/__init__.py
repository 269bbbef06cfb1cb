"""Reports: the profile table, per-layer latency reports, plots."""

from hwnas.report.latency import latency_report
from hwnas.report.summary import ProfileSummary, profile

__all__ = ["ProfileSummary", "latency_report", "profile"]
