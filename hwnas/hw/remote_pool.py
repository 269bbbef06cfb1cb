"""Several devices at once: a LUT per device, built in parallel (on Ray when it is installed, else in threads).

A LUT build times one subnet at a time on its device; what it waits for is the device. With devices behind
measurement agents (:mod:`hwnas.hw.remote`) on different machines, :func:`build_luts` builds their LUTs side by side:
each build is the ordinary :func:`~hwnas.hw.build.build_lut` (resumable, written atomically) on its own copy of the
space. A pool of agents of one device kind shares one LUT instead (``build_lut(device=[...])``).

Example:
    >>> from hwnas.hw.remote_pool import build_luts
    >>> luts = build_luts(space, x, {"pi4": "remote:http://pi4:8765/cpu-ort-4t",
    ...                              "jetson": "remote:http://jetson:8765/trt-fp16"},
    ...                   out="luts/{name}.json")                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["build_luts", "ray_available"]

log = logging.getLogger(__name__)


def ray_available() -> bool:
    """Whether ``ray`` can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _build_one(space: Any, dummy_input: Any, device: Any, path: str, kwargs: dict[str, Any]) -> str:
    from hwnas.hw.build import build_lut

    build_lut(space, dummy_input, device, path, progress=False, **kwargs)
    return path


def build_luts(space: Any, dummy_input: Any, devices: dict[str, Any], out: str | os.PathLike,
               executor: str = "auto", address: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Build one LUT per device, all at once; returns ``{name: LUT}``.

    Args:
        space, dummy_input: as for :func:`~hwnas.hw.build.build_lut`.
        devices: ``{name: device}`` (a device name, ``remote:...`` spec, :class:`~hwnas.hw.device.Device` or pool).
        out: the LUT path of each device, with ``{name}`` in it (e.g. ``"luts/digits_{name}.json"``).
        executor: ``"ray"`` (Ray tasks: one per device; ``address`` of a running cluster, or a local instance),
            ``"threads"`` (a thread per device in this process) or ``"auto"`` (Ray when installed).
        kwargs: other :func:`~hwnas.hw.build.build_lut` arguments (``repeats_per_kernel``, ``runs``, ...).
    """
    from hwnas.hw.lut import LUT

    if "{name}" not in str(out):
        raise ValueError(f"build_luts: out must hold {{name}} (one file per device), got {str(out)!r}; e.g. "
                         "out='luts/digits_{name}.json'.")
    if not devices:
        raise ValueError("build_luts: no devices given; pass {name: device}.")
    if executor not in ("auto", "ray", "threads"):
        raise ValueError(f"build_luts: executor must be 'auto', 'ray' or 'threads', got {executor!r}.")
    paths = {name: str(out).format(name=name) for name in devices}
    for p in paths.values():
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    local = [name for name, dev in devices.items() if not (isinstance(dev, str) and dev.startswith("remote:"))
             and not getattr(dev, "agent", "")]
    if len(local) > 1:
        log.warning("build_luts: %s run on this machine at once and will slow each other down; their LUTs will be "
                    "off. Build them one after another, or behind agents on separate machines.", local)
    use_ray = executor == "ray" or (executor == "auto" and ray_available())
    if use_ray:
        import ray

        started = not ray.is_initialized()
        if started:
            token = os.environ.get("HWNAS_DEVICE_TOKEN")
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": {"HWNAS_DEVICE_TOKEN": token}} if token else None)
        try:
            task = ray.remote(num_cpus=0)(_build_one)  # the work runs on the devices; the tasks mostly wait
            refs = {name: task.remote(space, dummy_input, dev if isinstance(dev, str) else copy.copy(dev), paths[name],
                                      kwargs) for name, dev in devices.items()}
            ray.get(list(refs.values()))
        finally:
            if started:
                ray.shutdown()
    else:
        with ThreadPoolExecutor(len(devices), thread_name_prefix="hwnas-luts") as ex:
            futures = {name: ex.submit(_build_one, copy.deepcopy(space), dummy_input, dev, paths[name], kwargs)
                       for name, dev in devices.items()}
            for f in futures.values():
                f.result()
    log.info("built %d LUTs (%s): %s", len(paths), "ray" if use_ray else "threads", sorted(paths.values()))
    return {name: LUT.load(p, check_fingerprint=False) for name, p in paths.items()}
