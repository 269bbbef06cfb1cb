"""Where trials are evaluated: in this process (default), on a ``concurrent.futures`` pool, or on Ray.

An executor has ``max_workers`` (how many trials the search proposes at once) and
``map(fn, samples) -> list`` that returns results in the order of ``samples``; results always come
back in order, so a parallel search is as reproducible as a sequential one with the same batch size.

Example:
    >>> ex = make_executor(None)
    >>> ex.map(lambda s: s["w"] * 2, [{"w": 1}, {"w": 2}])
    [2, 4]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

__all__ = ["InProcessExecutor", "FuturesExecutor", "RayExecutor", "make_executor", "timed_call", "apply"]

logger = logging.getLogger(__name__)


def timed_call(fn: Callable[[Any], Any], sample: Any) -> tuple[Any, float]:
    """``(fn(sample), seconds it took)``: the unit of work sent to workers."""
    t0 = time.perf_counter()
    out = fn(sample)
    return out, time.perf_counter() - t0


def apply(fn: Callable[[Any], Any], sample: Any) -> Any:
    """``fn(sample)``: the task a :class:`RayExecutor` runs remotely."""
    return fn(sample)


class InProcessExecutor:
    """Evaluate trials one after another in this process."""

    max_workers = 1

    def map(self, fn: Callable[[Any], Any], samples: Sequence[Any]) -> list[Any]:
        return [fn(s) for s in samples]

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "InProcessExecutor()"


class FuturesExecutor:
    """Wrap a ``concurrent.futures.Executor`` (a thread or process pool).

    Args:
        pool: the pool; its ``_max_workers`` (or ``max_workers``) sets the batch size.
        max_workers: override the batch size.
    """

    def __init__(self, pool: Executor, max_workers: int | None = None):
        self.pool = pool
        self.max_workers = int(max_workers or getattr(pool, "_max_workers", None) or 1)

    def map(self, fn: Callable[[Any], Any], samples: Sequence[Any]) -> list[Any]:
        futures = [self.pool.submit(fn, s) for s in samples]
        return [f.result() for f in futures]

    def close(self) -> None:
        pass  # the caller owns the pool

    def __repr__(self) -> str:
        return f"FuturesExecutor({type(self.pool).__name__}, max_workers={self.max_workers})"


class RayExecutor:
    """Evaluate trials as Ray tasks, on a running cluster (``address``) or a local instance.

    Ray is an optional extra: ``pip install "hwnas[ray]"``. The score function and samples are sent
    with Ray's serialiser (cloudpickle), so closures work; keep what they capture small.

    Args:
        address: a Ray cluster address (``"ray://host:10001"``, ``"host:6379"``, ``"auto"`` for the cluster
            started last on this machine), or ``None`` to start a new local instance (Ray's ``"local"``:
            never a stale cluster recorded in ``/tmp/ray``). When Ray is already initialised in this
            process, that instance is used as is.
        num_cpus_per_trial: CPUs each trial reserves.
        max_workers: trials in flight at once (default: the cluster's CPUs / ``num_cpus_per_trial``).
        init_kwargs: further arguments for ``ray.init``.
    """

    def __init__(self, address: str | None = None, num_cpus_per_trial: float = 1.0, max_workers: int | None = None,
                 init_kwargs: dict[str, Any] | None = None):
        try:
            import ray
        except ImportError:
            raise ImportError('executor="ray" needs Ray, which is not installed; install the extra with '
                              'pip install "hwnas[ray]" (or pip install ray), or use the default in-process '
                              "executor.") from None
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
            try:
                ray.init(address="local" if address is None else address, **kwargs)
            except Exception as e:
                raise RuntimeError(f"RayExecutor could not connect to Ray at address={address!r}: {e}. Check that "
                                   "the cluster is running (ray status) and the address, or pass address=None "
                                   "for a local instance.") from e
            self._owns = True
            logger.info("started Ray (address=%s)", address)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.num_cpus_per_trial = num_cpus_per_trial
        self.max_workers = int(max_workers or max(1, int(cpus // max(num_cpus_per_trial, 1e-9))))
        self._remote = ray.remote(num_cpus=num_cpus_per_trial)(apply)
        self._fn_ref: tuple[Any, Any] | None = None

    def map(self, fn: Callable[[Any], Any], samples: Sequence[Any]) -> list[Any]:
        ray = self._ray
        if self._fn_ref is None or self._fn_ref[0] is not fn:
            self._fn_ref = (fn, ray.put(fn))  # ship the score function once, not once per trial
        refs = [self._remote.remote(self._fn_ref[1], s) for s in samples]
        return ray.get(refs)

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()
            self._owns = False

    def __repr__(self) -> str:
        return f"RayExecutor(max_workers={self.max_workers}, num_cpus_per_trial={self.num_cpus_per_trial})"


def make_executor(executor: Any = None, address: str | None = None) -> Any:
    """An executor from ``None``/``"inprocess"``, ``"ray"`` (with ``address``), a ``concurrent.futures``
    pool, or any object with ``map(fn, samples)`` and ``max_workers``."""
    if executor is None or executor == "inprocess":
        return InProcessExecutor()
    if executor == "ray":
        return RayExecutor(address)
    if isinstance(executor, Executor):
        return FuturesExecutor(executor)
    if callable(getattr(executor, "map", None)):
        if not hasattr(executor, "max_workers"):
            raise TypeError(f"executor {executor!r} has map() but no max_workers; add the attribute (how many "
                            "trials to evaluate at once).")
        return executor
    raise ValueError(f"executor must be None (in-process), 'ray', a concurrent.futures executor or an object with "
                     f"map(fn, samples) and max_workers; got {executor!r}.")
