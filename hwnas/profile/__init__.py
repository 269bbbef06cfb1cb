"""Profilers over the cost-table engine: FLOPs and parameters (latency in hwnas.hw)."""

from hwnas.profile.engine import CostModel
from hwnas.profile.profilers import FlopsProfiler, NumParamsProfiler, Profiler
from hwnas.profile.rules import register_cost_rule

__all__ = ["CostModel", "FlopsProfiler", "NumParamsProfiler", "Profiler", "register_cost_rule"]
