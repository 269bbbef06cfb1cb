"""Devices behind a measurement agent: ``--device remote:http://host:port/cpu-ort-4t``.

:func:`connect` asks the agent (``hwnas device serve``, :mod:`hwnas.device_agent`) for the device's configuration and
its machine's fingerprint, and returns a :class:`~hwnas.hw.device.Device` whose ``agent`` is the URL. Every measuring
path of hwnas (:func:`~hwnas.hw.measure.measure_many`, :func:`~hwnas.hw.profiling.profile_run`,
:func:`~hwnas.hw.measure.open_reference`, :func:`~hwnas.hw.profiling.optimized_graph`) sends such a device's work to
the agent through this module, so LUT builds, speed checks, ``hwnas adapt``, predictor training and
``report latency --measure`` run there unchanged, with their own resume and atomic-write guarantees.

The token comes from the ``HWNAS_DEVICE_TOKEN`` environment variable (or ``connect(token=)``). A query string sets
the client's limits: ``remote:http://host:port/cpu-ort-4t?timeout=120&retry=600`` (seconds a run may take on the
agent; seconds to keep retrying an agent that does not answer).

Faults: an agent that dies or restarts mid-job is retried with exponential backoff (0.5 s doubling up to 10 s) for
``retry`` seconds, and the job is sent again, models included, so a build waits and then goes on; nothing measured
before is lost (the build saved it). A wrong token, a model too large or not ONNX, or a run over its time limit
raise :class:`RemoteError` at once, with the agent's message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np

from hwnas.hw import remote_wire as wire
from hwnas.hw.device import Device

__all__ = ["RemoteError", "RemoteReference", "connect", "agent_of", "check_agent_device", "cached_fingerprint",
           "remote_measure_many", "remote_profile_run", "remote_open_reference", "remote_optimized_bytes",
           "TOKEN_ENV"]

log = logging.getLogger(__name__)

#: The environment variable that holds the agent's token.
TOKEN_ENV = "HWNAS_DEVICE_TOKEN"


class RemoteError(RuntimeError):
    """The agent refused a job or could not run it (the message says why and what to do)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class _Agent:
    """One agent (base URL): its token, limits and the blobs it holds."""

    def __init__(self, base: str, token: str, run_timeout_s: float, retry_s: float):
        self.base, self.token = base, token
        self.run_timeout_s, self.retry_s = run_timeout_s, retry_s
        self.sent: set[str] = set()  # blobs this agent instance has
        self.max_request_bytes = 2 ** 62  # the agent's limit, once known
        self.instance = ""
        self.lock = threading.Lock()

    def _request(self, method: str, path: str, body: bytes | None, timeout: float) -> dict[str, Any]:
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                payload = json.loads(e.read())
            except ValueError:
                payload = {"message": f"HTTP {e.code} {e.reason}"}
            payload.setdefault("message", f"HTTP {e.code}")
            payload["status"] = e.code
            return payload

    def call(self, method: str, path: str, body_fn: Any = None, timeout: float = 60.0) -> dict[str, Any]:
        """A request, retried with backoff while the agent does not answer (down, restarting, unreachable)."""
        began, wait = time.monotonic(), 0.5
        while True:
            try:
                return self._request(method, path, body_fn() if body_fn else None, timeout)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, http.client.HTTPException) as e:
                if isinstance(e, urllib.error.URLError) and isinstance(e.reason, str) and "unknown url" in e.reason:
                    raise
                left = self.retry_s - (time.monotonic() - began)
                if left <= 0:
                    raise RemoteError(f"the measurement agent at {self.base} has not answered for {self.retry_s:g} s "
                                      f"({getattr(e, 'reason', e)}). Start it again (hwnas device serve) and resume: "
                                      "what was measured is saved.") from None
                log.warning("agent %s does not answer (%s); retrying in %.1f s", self.base, getattr(e, "reason", e),
                            min(wait, left))
                time.sleep(min(wait, left))
                wait = min(wait * 2, 10.0)


_AGENTS: dict[str, _Agent] = {}
_FINGERPRINTS: dict[str, dict[str, Any]] = {}
_DEVICES: dict[str, Device] = {}


def _split(url: str) -> tuple[str, str, dict[str, list[str]]]:
    parts = urlsplit(url)
    name = parts.path.strip("/")
    if parts.scheme not in ("http", "https") or not parts.netloc or not name or "/" in name:
        raise ValueError(f"remote device {url!r}: expected http://host:port/<device name on the agent>, e.g. "
                         "remote:http://192.168.1.20:8765/cpu-ort-4t.")
    return f"{parts.scheme}://{parts.netloc}", name, parse_qs(parts.query)


def agent_of(device: Device) -> _Agent:
    """The client state of ``device``'s agent (created on first use, token from the environment)."""
    base, _, _ = _split(device.agent)
    if base not in _AGENTS:
        connect(device.agent)
    return _AGENTS[base]


def connect(url: str, token: str | None = None, run_timeout_s: float | None = None,
            retry_s: float | None = None) -> Device:
    """The device ``<name>`` of the agent at ``url`` (``http://host:port/<name>[?timeout=S&retry=S]``).

    Raises:
        RemoteError: the token is wrong or missing, or the agent has no such device.
    """
    base, name, query = _split(url)
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ValueError(f"remote device {url!r}: no token. Set the {TOKEN_ENV} environment variable to the token the "
                         "agent was started with (hwnas device serve --token T).")
    timeout = run_timeout_s if run_timeout_s is not None else float(query.get("timeout", ["600"])[0])
    retry = retry_s if retry_s is not None else float(query.get("retry", ["600"])[0])
    agent = _AGENTS.get(base)
    if agent is None or agent.token != token:
        agent = _AGENTS[base] = _Agent(base, token, timeout, retry)
    agent.run_timeout_s, agent.retry_s = timeout, retry
    answer = agent.call("GET", f"/v1/devices/{quote(name)}", timeout=120)
    _raise_for(answer, f"remote device {base}/{name}")
    fields = dict(answer["device"])
    fields["provider_options"] = tuple(tuple(p) for p in fields.get("provider_options", ()))
    fields.pop("agent", None)
    host = urlsplit(base).netloc
    dev = Device(**{**fields, "name": f"{name}@{host}", "agent": f"{base}/{name}"})
    _FINGERPRINTS[dev.agent] = {**answer["fingerprint"], "device": dev.name, "agent": dev.agent}
    agent.instance = answer.get("instance", "")
    agent.max_request_bytes = int(answer.get("limits", {}).get("max_request_bytes", agent.max_request_bytes))
    _DEVICES[dev.agent] = dev
    return dev


def cached_fingerprint(device: Device) -> dict[str, Any] | None:
    """The agent's fingerprint of ``device`` as last seen by this process (``None`` before any contact)."""
    return _FINGERPRINTS.get(device.agent)


def check_agent_device(device: Device) -> None:
    """Raise unless the agent answers, accepts the token and can run ``device`` (its provider installed there)."""
    connect(device.agent)
    _job(device, "check", [], [], {})


def _raise_for(answer: dict[str, Any], what: str) -> None:
    if answer.get("ok"):
        return
    status, message = answer.get("status", 0), answer.get("message", "no message")
    error = answer.get("error")
    if error in ("ValueError", "TypeError", "FileNotFoundError", "KeyError"):  # the same error as a local run gives
        raise {"ValueError": ValueError, "TypeError": TypeError, "FileNotFoundError": FileNotFoundError,
               "KeyError": KeyError}[error](f"{what} (on the agent): {message}")
    raise RemoteError(f"{what}: the agent answered {status}: {message}", status)


# ------------------------------------------------------------------------------------------------------ jobs
@dataclass
class RemoteReference:
    """A reference model that the agent keeps open across measurements (what :func:`~hwnas.hw.measure.open_reference`
    returns for a remote device): every job that names it is paired with the same session there."""

    onnx: bytes
    input: Any
    seed: int = 0


class _Blobs:
    """The blobs of one job, each named by its SHA-256."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, bytes]] = {}

    def add(self, kind: str, data: bytes) -> str:
        sha = wire.sha256(data)
        self.items[sha] = (kind, data)
        return sha

    def spec(self, value: Any) -> Any:
        """A feed spec (None, array/tensor, list/tuple, dict) as JSON naming ``.npy`` blobs."""
        if value is None:
            return None
        if isinstance(value, dict):
            return {"dict": {str(k): self.spec(v) for k, v in value.items()}}
        if isinstance(value, (list, tuple)):
            return {"list": [self.spec(v) for v in value]}
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        return {"npy": self.add("npy", wire.array_to_npy(np.asarray(value)))}


def _job(device: Device, op: str, models: list[bytes], inputs: list[Any], kwargs: dict[str, Any],
         reference: dict[str, Any] | None = None, blobs: _Blobs | None = None) -> Any:
    agent = agent_of(device)
    blobs = blobs or _Blobs()
    names = [blobs.add("onnx", m) for m in models]
    config = {k: ([list(p) for p in v] if k == "provider_options" else v) for k, v in device.__dict__.items()
              if k not in ("name", "agent", "description")}
    header = {"protocol": wire.PROTOCOL, "op": op, "device": device.agent.rsplit("/", 1)[1], "config": config,
              "models": names,
              "inputs": [blobs.spec(x) for x in inputs], "kwargs": kwargs, "reference": reference,
              "timeout_s": agent.run_timeout_s}
    for _ in range(3):
        def body() -> bytes:  # built at each try: after a restart the agent holds nothing
            data = wire.pack_job(header, [b for s, b in blobs.items.items() if s not in agent.sent])
            if len(data) > agent.max_request_bytes:  # too large for one request: send the blobs ahead
                _store_ahead(agent, device, blobs, len(data) - sum(len(b) for _, b in blobs.items.values()))
                data = wire.pack_job(header, [b for s, b in blobs.items.items() if s not in agent.sent])
            return data

        answer = agent.call("POST", "/v1/job", body, timeout=agent.run_timeout_s + 60)
        if answer.get("status") == 409:  # the agent restarted (or dropped them): send every blob again
            agent.sent.clear()
            continue
        _raise_for(answer, f"{op} on {device.name}")
        run = answer.get("run", {})
        if run.get("instance") != agent.instance:
            agent.instance = run.get("instance", "")
            agent.sent.clear()
        agent.sent.update(blobs.items)
        return answer["result"]
    raise RemoteError(f"{op} on {device.name}: the agent kept losing the models sent to it (3 tries).")


def _store_ahead(agent: _Agent, device: Device, blobs: _Blobs, header_bytes: int) -> None:
    """Send the blobs the agent lacks in requests within its limit (``store`` jobs), so that the job itself is small.

    Raises:
        RemoteError: one blob alone is larger than the agent's request limit (413).
    """
    room = agent.max_request_bytes - header_bytes - 4096
    batch: list[tuple[str, tuple[str, bytes]]] = []

    def flush() -> None:
        if batch:
            answer = agent.call("POST", "/v1/job", lambda: wire.pack_job(
                {"protocol": wire.PROTOCOL, "op": "store"}, [kb for _, kb in batch]), timeout=600)
            _raise_for(answer, f"sending models to {device.name}")
            agent.sent.update(s for s, _ in batch)
            batch.clear()

    for sha, (kind, data) in blobs.items.items():
        if sha in agent.sent:
            continue
        if len(data) > room:
            raise RemoteError(f"sending to {device.name}: a {kind} of {len(data)} bytes is larger than the agent's "
                              f"request limit of {agent.max_request_bytes} bytes (413); start the agent with a larger "
                              "--max-request-mb.", 413)
        if sum(len(d) for _, (_, d) in batch) + len(data) > room:
            flush()
        batch.append((sha, (kind, data)))
    flush()


def _model_bytes(model: Any, dummy_input: Any, index: int) -> bytes:
    from hwnas.hw.measure import _resolve_model

    with tempfile.TemporaryDirectory(prefix="hwnas-remote-") as tmp:
        path, _, _ = _resolve_model(model, dummy_input, tmp, index)
        if not Path(path).is_file():
            raise FileNotFoundError(f"ONNX model '{path}' not found (expected an existing .onnx file to send to the "
                                    "measurement agent).")
        return Path(path).read_bytes()


def _reference(reference: Any, reference_input: Any, blobs: _Blobs) -> dict[str, Any] | None:
    if reference is None:
        return None
    if isinstance(reference, RemoteReference):
        return {"model": blobs.add("onnx", reference.onnx), "input": blobs.spec(reference.input), "keep": True,
                "seed": reference.seed}
    if hasattr(reference, "run") and hasattr(reference, "session"):
        raise ValueError("reference= is an open session on this machine (a BoundRunner), but the device runs behind an "
                         "agent: open the reference with hwnas.hw.open_reference(model, device) for that device.")
    return {"model": blobs.add("onnx", _model_bytes(reference, reference_input, -1)),
            "input": blobs.spec(reference_input), "keep": False}


def remote_open_reference(model: Any, device: Device, dummy_input: Any = None, seed: int = 0) -> RemoteReference:
    """:func:`~hwnas.hw.measure.open_reference` for a remote device."""
    return RemoteReference(_model_bytes(model, dummy_input, 0), dummy_input, seed)


def remote_measure_many(models: list[Any], device: Device, dummy_inputs: list[Any], *, reference: Any = None,
                        reference_input: Any = None, **kwargs: Any) -> list[Any]:
    """:func:`~hwnas.hw.measure.measure_many` on the agent (same arguments, same records)."""
    from hwnas.hw.measure import LatencyRecord

    data = [_model_bytes(m, x, i) for i, (m, x) in enumerate(zip(models, dummy_inputs))]
    names = [str(m) if isinstance(m, (str, os.PathLike)) else f"<{type(m).__name__}>" for m in models]
    if reference_input is None and reference is not None and not isinstance(reference, RemoteReference):
        reference_input = dummy_inputs[0]
    blobs = _Blobs()
    ref = _reference(reference, reference_input, blobs)
    kw = {k: v for k, v in kwargs.items() if v is not None}
    rows = _job(device, "measure_many", data, list(dummy_inputs), kw, ref, blobs)
    out = []
    for name, row in zip(names, rows):
        rec = LatencyRecord(**wire.from_json(row))
        rec.model, rec.device = name, device.name
        out.append(rec)
    return out


def remote_profile_run(onnx_path: Any, device: Device, dummy_input: Any = None, *, runs: int = 50, warmup: int = 10,
                       seed: int = 0, reference: Any = None, reference_ms: float | None = None) -> Any:
    """:func:`~hwnas.hw.profiling.profile_run` on the agent."""
    import pandas as pd

    from hwnas.hw.profiling import NODE_COLUMNS, NodeProfile

    blobs = _Blobs()
    ref = _reference(reference, dummy_input, blobs)
    kw = {"runs": runs, "warmup": warmup, "seed": seed, **({"reference_ms": reference_ms} if reference_ms else {})}
    out = wire.from_json(_job(device, "profile_run", [_model_bytes(onnx_path, dummy_input, 0)], [dummy_input], kw,
                              ref, blobs))
    nodes = pd.DataFrame(out["rows"], columns=NODE_COLUMNS)
    nodes.attrs.update(end_to_end_median_ms=out["end_to_end_median_ms"], runs=runs, device=device.name)
    return NodeProfile(nodes, out["end_to_end_median_ms"], out["wall_median_ms"], runs, device.name, out["speeds"])


def remote_optimized_bytes(onnx_path: Any, device: Device) -> bytes:
    """The optimised model ORT writes on the agent for ``device``."""
    import base64

    return base64.b64decode(_job(device, "optimized", [_model_bytes(onnx_path, None, 0)], [None], {}))
