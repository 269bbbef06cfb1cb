"""Errors raised by search."""

from __future__ import annotations

__all__ = ["SearchError", "RejectionError", "CheckpointError"]


class SearchError(RuntimeError):
    """A search could not return a valid result (e.g. no candidate met the constraints)."""


class RejectionError(SearchError):
    """Filters or constraints rejected ``max_rejects`` candidates in a row."""


class CheckpointError(SearchError):
    """A checkpoint file does not belong to this search (other space, seed, strategy or constraints)."""
