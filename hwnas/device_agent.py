"""The measurement agent: ``hwnas device serve`` times ONNX models on the machine it runs on, for hwnas elsewhere.

It is a small HTTP server from the standard library (``http.server``), bounded and authenticated:

- every request needs the token (``Authorization: Bearer <token>``); a wrong or missing one gets 401;
- a body over ``--max-request-mb`` gets 413 before it is read; an ONNX blob over ``--max-model-mb``, a blob that is
  not an ONNX model, or an array that is not a plain ``.npy`` gets 400 (:mod:`hwnas.hw.remote_wire`: JSON and raw
  bytes, never pickle);
- timing runs are serialised: one job at a time, whichever client sent it (other clients wait their turn), so a
  timing run never overlaps another;
- each job runs in a worker process with a time limit (``--timeout``, or the client's smaller one); a job over it
  is stopped (the worker is killed and started again) and gets 504.

Endpoints: ``GET /v1/info`` (the agent, its devices and limits), ``GET /v1/devices/<name>`` (a device's fields and
the fingerprint of this machine for it), ``POST /v1/job`` (``measure_many``, ``profile_run``, ``optimized`` or
``check``; answers JSON). The worker runs hwnas's own :func:`hwnas.hw.measure.measure_many` and
:func:`hwnas.hw.profiling.profile_rows`, so a remote measurement is the local one, done there.

The agent needs only ``onnxruntime``, ``numpy`` and a few hwnas modules: :func:`pack_agent` (``hwnas device pack``)
writes them into one ``.pyz`` file that runs with ``python hwnas-agent.pyz serve ...`` (``docs/devices.md``).
"""

from __future__ import annotations

import argparse
import hmac
import http.server
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hwnas.hw import remote_wire as wire
from hwnas.io import atomic_write_bytes, atomic_writer

__all__ = ["AgentState", "serve", "make_server", "pack_agent", "main", "worker_main"]

log = logging.getLogger("hwnas.device_agent")

#: Keyword arguments a job may pass on to each operation (anything else is refused).
JOB_KWARGS = {
    "measure_many": {"warmup": int, "repeats": int, "rounds": int, "seed": int, "rewarm": int, "min_turn_ms": float,
                     "method": str, "turn_ms": float, "time_limit_s": float},
    "profile_run": {"runs": int, "warmup": int, "seed": int, "reference_ms": float},
    "optimized": {},
    "check": {},
    "store": {},  # only keeps the blobs sent with it (models for a later job too large for one request)
}
_MODULES = ["hwnas/device_agent.py", "hwnas/hw/device.py", "hwnas/hw/session.py", "hwnas/hw/measure.py",
            "hwnas/hw/profiling.py", "hwnas/hw/remote_wire.py", "hwnas/io.py"]


class JobError(Exception):
    """A job the agent refuses or could not run: ``status`` is the HTTP status it answers."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.extra = status, extra


# ------------------------------------------------------------------------------------------------ worker process
# the worker imports only the modules it needs: the packages hwnas and hwnas.hw are bare stand-ins for their
# __init__ files (which import torch and the whole library)
_WORKER_CODE = """
import os, sys, types
_root = os.environ["HWNAS_AGENT_ROOT"]
sys.path.insert(0, _root)
for _name in ("hwnas", "hwnas.hw"):
    _mod = types.ModuleType(_name)
    _mod.__path__ = [os.path.join(_root, *_name.split("."))]
    sys.modules[_name] = _mod
from hwnas.device_agent import worker_main
worker_main()
"""


class _Worker:
    """One worker process that runs jobs (line-delimited JSON over its stdin/stdout); killed on a timeout."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()

    def start(self) -> None:
        """Start the worker process if it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)  # the folder or .pyz that holds the hwnas package
        env = dict(os.environ, HWNAS_AGENT_ROOT=root)
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def run(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.start()
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise JobError(504, f"the run took longer than its time limit of {timeout_s:g} s; the agent stopped it. "
                                "Pass a longer timeout (remote:URL?timeout=S, at most the agent's --timeout) or measure "
                                "a smaller model.") from None
        if line is None:
            self.stop()
            raise JobError(500, "the agent's worker process died during the run (out of memory, or a crash in the "
                                "execution provider); see the agent's log.")
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def worker_main() -> None:
    """The worker process: read one job per line on stdin, answer one JSON line on the original stdout."""
    # (no PR_SET_PDEATHSIG: it fires when the *thread* that started the worker ends, and a worker restarted after a
    # timeout is started by a request's thread; a worker whose agent died ends at the end of its stdin instead)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints (ORT, user code) go to stderr, never into the answers
    references: dict[str, Any] = {}
    for line in sys.stdin:
        try:
            answer = {"ok": True, "result": _work(json.loads(line), references)}
        except Exception as e:  # every failure goes back to the client with its type and message
            answer = {"ok": False, "error": type(e).__name__, "message": str(e)}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _inputs(spec: Any, store: dict[str, str]) -> Any:
    import numpy as np

    if spec is None:
        return None
    if "npy" in spec:
        return np.load(store[spec["npy"]], allow_pickle=False)
    if "list" in spec:
        return [_inputs(s, store) for s in spec["list"]]
    return {k: _inputs(s, store) for k, s in spec["dict"].items()}


def _work(job: dict[str, Any], references: dict[str, Any]) -> Any:
    import dataclasses

    from hwnas.hw.device import Device
    from hwnas.hw.measure import measure_many, open_reference
    from hwnas.hw.profiling import optimized_bytes, profile_rows

    dev = Device(**{**job["device"], "provider_options": tuple(tuple(p) for p in job["device"]["provider_options"])})
    store, kw = job["store"], job["kwargs"]
    reference = None
    if job.get("reference"):
        ref = job["reference"]
        path = store[ref["model"]]
        if ref.get("keep"):  # one open session for every job that names it: a shared speed basis
            key = json.dumps([ref, job["device"]], sort_keys=True)
            if key not in references:
                if len(references) >= 8:
                    references.pop(next(iter(references)))
                references[key] = open_reference(path, dev, _inputs(ref.get("input"), store), seed=ref.get("seed", 0))
            reference = references[key]
        else:
            reference = path
            kw["reference_input"] = _inputs(ref.get("input"), store)
    op = job["op"]
    if op == "measure_many":
        records = measure_many([store[m] for m in job["models"]], dev,
                               dummy_inputs=[_inputs(s, store) for s in job["inputs"]], reference=reference, **kw)
        return [wire.to_json(dataclasses.asdict(r)) for r in records]
    if op == "profile_run":
        return wire.to_json(profile_rows(store[job["models"][0]], dev, _inputs(job["inputs"][0], store),
                                         reference=reference, **kw))
    if op == "optimized":
        import base64

        return base64.b64encode(optimized_bytes(store[job["models"][0]], dev)).decode("ascii")
    if op == "check":
        dev.check_available()
        return True
    raise ValueError(f"unknown job op {op!r}")


# ------------------------------------------------------------------------------------------------- agent state
class AgentState:
    """What the HTTP handlers share: the token, the devices, the blob store, the run lock and the worker.

    Args:
        token: the secret every request must carry.
        devices: the devices served, by name (default: the registry, plus ``cpu-ort-<n>t`` for 1..cores threads).
        max_request_bytes, max_model_bytes: refuse larger bodies / ONNX models.
        timeout_s: the longest a job may run.
        store_bytes: blobs kept (oldest dropped first beyond this).
    """

    def __init__(self, token: str, devices: dict[str, Any] | None = None, max_request_bytes: int = 256 << 20,
                 max_model_bytes: int = 128 << 20, timeout_s: float = 600.0, store_bytes: int = 2 << 30):
        from hwnas.hw.device import Device, get_device, list_devices

        if not token or len(token) < 8:
            raise ValueError("the agent needs a token of at least 8 characters (--token, or the HWNAS_DEVICE_TOKEN "
                             "environment variable); clients send it with every request.")
        self.token = token.encode("utf-8")
        if devices is None:
            devices = {n: get_device(n) for n in list_devices()}
            for n in range(1, max(2, os.cpu_count() or 1) + 1):
                devices.setdefault(f"cpu-ort-{n}t", Device(f"cpu-ort-{n}t", intra_op_threads=n,
                                                            description=f"ORT CPU provider, {n} intra-op threads"))
        self.devices = devices
        self.max_request_bytes, self.max_model_bytes = int(max_request_bytes), int(max_model_bytes)
        self.timeout_s, self.store_bytes = float(timeout_s), int(store_bytes)
        self.instance = uuid.uuid4().hex[:12]
        self.store_dir = tempfile.mkdtemp(prefix="hwnas-agent-")
        self.store: dict[str, tuple[str, int, float]] = {}  # sha -> (path, size, last use)
        self.store_lock = threading.Lock()
        self.run_lock = threading.Lock()
        self.worker = _Worker()
        self.jobs = 0

    def device_fields(self, name: str) -> dict[str, Any]:
        if name not in self.devices:
            raise JobError(404, f"this agent has no device {name!r}; it serves {sorted(self.devices)} (add one with "
                                "hwnas device serve --device-file FILE).")
        fields = dict(self.devices[name].__dict__)
        fields["provider_options"] = [list(p) for p in fields["provider_options"]]
        return fields

    def keep(self, blobs: dict[str, tuple[str, bytes]]) -> None:
        with self.store_lock:
            for sha, (kind, data) in blobs.items():
                path = os.path.join(self.store_dir, f"{sha}.{kind}")
                if sha not in self.store:
                    atomic_write_bytes(path, data)
                self.store[sha] = (path, len(data), time.monotonic())
            total = sum(size for _, size, _ in self.store.values())
            for sha, (path, size, _) in sorted(self.store.items(), key=lambda kv: kv[1][2]):
                if total <= self.store_bytes or sha in blobs:
                    break
                os.remove(path)
                del self.store[sha]
                total -= size

    def paths(self, shas: list[str]) -> dict[str, str]:
        with self.store_lock:
            missing = sorted({s for s in shas if s not in self.store})
            if missing:
                raise JobError(409, f"{len(missing)} blob(s) unknown to this agent; send them.", missing=missing)
            now = time.monotonic()
            for s in shas:
                path, size, _ = self.store[s]
                self.store[s] = (path, size, now)
            return {s: self.store[s][0] for s in shas}

    def run(self, header: dict[str, Any]) -> dict[str, Any]:
        op = header.get("op")
        if op not in JOB_KWARGS:
            raise JobError(400, f"unknown job op {op!r}; expected one of {sorted(JOB_KWARGS)}.")
        if op == "store":  # the blobs were kept on arrival; no run
            return {"result": True, "run": {"instance": self.instance}}
        fields = self.device_fields(str(header.get("device")))
        config = header.get("config") or {}  # the client's settings of that device (e.g. another optimisation level)
        if not isinstance(config, dict) or set(config) - (set(fields) - {"name", "agent", "description"}):
            raise JobError(400, f"job config must be a dict of device fields, got {config!r}.")
        fields.update(config)
        kwargs = dict(header.get("kwargs") or {})
        for key, value in kwargs.items():
            kind = JOB_KWARGS[op].get(key)
            if kind is None or (value is not None and not isinstance(value, (int, float) if kind is float else kind)):
                raise JobError(400, f"job {op}: argument {key}={value!r} is not accepted; allowed: "
                                    f"{ {k: t.__name__ for k, t in JOB_KWARGS[op].items()} }.")
        models = [str(m) for m in header.get("models") or []]
        ref = header.get("reference")
        shas = models + _npy_names(header.get("inputs")) + ([ref["model"], *_npy_names([ref.get("input")])]
                                                            if ref else [])
        store = self.paths(shas)
        limit = min(self.timeout_s, float(header.get("timeout_s") or self.timeout_s))
        job = {"op": op, "device": fields, "store": store, "models": models, "inputs": header.get("inputs") or [],
               "kwargs": kwargs, "reference": ref}
        asked = time.time()
        with self.run_lock:  # one timing run at a time, whoever asks
            started = time.time()
            try:
                answer = self.worker.run(job, limit)
            finally:
                finished = time.time()
            self.jobs += 1
        if not answer.get("ok"):
            raise JobError(422, answer.get("message", "the run failed"), error=answer.get("error", "RuntimeError"))
        return {"result": answer["result"], "run": {"asked": asked, "started": started, "finished": finished,
                                                    "instance": self.instance}}

    def close(self) -> None:
        self.worker.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


def _npy_names(specs: Any) -> list[str]:
    out: list[str] = []
    stack = list(specs or [])
    while stack:
        s = stack.pop()
        if not isinstance(s, dict):
            continue
        if "npy" in s:
            out.append(str(s["npy"]))
        stack.extend(s.get("list", []))
        stack.extend((s.get("dict") or {}).values())
    return out


# -------------------------------------------------------------------------------------------------- HTTP server
class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "hwnas-agent"
    timeout = 120  # seconds a client may take to send its request (no connection is held forever)

    @property
    def state(self) -> AgentState:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, **extra: Any) -> None:
        self._send(status, {"ok": False, "status": status, "message": message, **extra})

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        token = given[len("Bearer "):].encode("utf-8") if given.startswith("Bearer ") else b""
        if not hmac.compare_digest(token, self.state.token):
            self.close_connection = True
            self._error(401, "wrong or missing token: send 'Authorization: Bearer <token>' with the token the agent "
                             "was started with (HWNAS_DEVICE_TOKEN on the client).")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorised():
            return
        state = self.state
        if self.path == "/v1/info":
            from hwnas.hw.device import hwnas_version

            self._send(200, {"ok": True, "protocol": wire.PROTOCOL, "instance": state.instance, "hwnas": hwnas_version(),
                             "devices": {n: state.device_fields(n) for n in sorted(state.devices)}, "jobs": state.jobs,
                             "limits": {"max_request_bytes": state.max_request_bytes,
                                        "max_model_bytes": state.max_model_bytes, "timeout_s": state.timeout_s}})
        elif self.path.startswith("/v1/devices/"):
            from hwnas.hw.device import fingerprint

            name = unquote(self.path[len("/v1/devices/"):])
            try:
                fields = state.device_fields(name)
            except JobError as e:
                self._error(e.status, str(e), devices=sorted(state.devices))
                return
            self._send(200, {"ok": True, "device": fields, "fingerprint": fingerprint(state.devices[name]),
                             "instance": state.instance, "protocol": wire.PROTOCOL,
                             "limits": {"max_request_bytes": state.max_request_bytes,
                                        "max_model_bytes": state.max_model_bytes, "timeout_s": state.timeout_s}})
        else:
            self._error(404, f"no endpoint {self.path!r}; the agent has GET /v1/info, GET /v1/devices/<name>, "
                             "POST /v1/job.")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        state = self.state
        if self.path != "/v1/job":
            self._error(404, f"no endpoint {self.path!r}; jobs go to POST /v1/job.")
            return
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._error(411, "a job needs a Content-Length header.")
            return
        if size > state.max_request_bytes:
            self.close_connection = True  # the body is never read
            self._error(413, f"request of {size} bytes is larger than this agent's limit of {state.max_request_bytes} "
                             "bytes; send fewer models per job or start the agent with a larger --max-request-mb.")
            return
        try:
            body = self.rfile.read(size)
            header, blobs = wire.unpack_job(body, state.max_model_bytes)
            state.keep(blobs)
            self._send(200, {"ok": True, **state.run(header)})
        except wire.WireError as e:
            self._error(400, str(e))
        except JobError as e:
            self._error(e.status, str(e), **e.extra)
        except Exception as e:  # a bug of the agent: answer instead of dropping the connection
            log.exception("job failed")
            self._error(500, f"{type(e).__name__}: {e}")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(state: AgentState, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``state`` (``port=0``: any free port, see ``server.server_address``)."""
    server = _Server((host, port), _Handler)
    server.state = state  # type: ignore[attr-defined]
    return server


def serve(host: str = "127.0.0.1", port: int = 8765, token: str | None = None, device_file: str | None = None,
          max_request_mb: float = 256, max_model_mb: float = 128, timeout_s: float = 600.0) -> None:
    """Run the agent until interrupted (``hwnas device serve``)."""
    from hwnas.hw.device import load_device_file

    token = token or os.environ.get("HWNAS_DEVICE_TOKEN", "")
    if device_file:
        load_device_file(device_file, overwrite=True)
    state = AgentState(token, max_request_bytes=int(max_request_mb * 2 ** 20),
                       max_model_bytes=int(max_model_mb * 2 ** 20), timeout_s=timeout_s)
    server = make_server(state, host, port)
    state.worker.start()  # its imports now, not in the first client's time
    print(f"hwnas agent {state.instance} serving {sorted(state.devices)} on http://{host}:{server.server_address[1]} "
          f"(one timing run at a time, {timeout_s:g} s limit per run)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.close()


def pack_agent(path: str | os.PathLike) -> Path:
    """Write the agent and the few hwnas modules it needs into one ``.pyz`` file (runs with onnxruntime and numpy
    only: ``python hwnas-agent.pyz serve --port P --token T``)."""
    root = Path(__file__).resolve().parent.parent
    path = Path(path)
    from hwnas.hw.device import hwnas_version

    with atomic_writer(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__main__.py", "from hwnas.device_agent import main\nmain()\n")
        zf.writestr("hwnas/__init__.py", f'"""hwnas: the measurement agent only."""\n__version__ = "{hwnas_version()}"\n')
        zf.writestr("hwnas/hw/__init__.py", '"""The modules the measurement agent needs."""\n')
        for rel in _MODULES:
            zf.write(root / rel, rel)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m hwnas.device_agent serve ...`` (what ``hwnas device serve`` and the .pyz run)."""
    p = argparse.ArgumentParser(prog="hwnas-agent", description="hwnas measurement agent")
    sub = p.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help="serve timing runs over HTTP"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    serve_from_args(args)
    return 0


def add_serve_arguments(s: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (shared with ``hwnas device serve``)."""
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, default=8765, help="TCP port to listen on (default 8765)")
    s.add_argument("--token", default=None, help="shared secret (default: the HWNAS_DEVICE_TOKEN environment variable)")
    s.add_argument("--device-file", default=None, help="JSON/TOML file of extra devices to serve")
    s.add_argument("--max-request-mb", type=float, default=256, help="largest request body (default 256 MB)")
    s.add_argument("--max-model-mb", type=float, default=128, help="largest ONNX model (default 128 MB)")
    s.add_argument("--timeout", type=float, default=600.0, help="longest run of one job in seconds (default 600)")


def serve_from_args(args: argparse.Namespace) -> None:
    serve(args.host, args.port, args.token, args.device_file, args.max_request_mb, args.max_model_mb, args.timeout)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
