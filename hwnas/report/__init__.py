"""Reports: the profile table (and later latency reports and plots)."""

from hwnas.report.summary import ProfileSummary, profile

__all__ = ["ProfileSummary", "profile"]
