"""A measurement agent on this machine, in a subprocess: for tests, benchmarks and trying the remote path.

:func:`spawn_agent` packs the agent (:func:`hwnas.device_agent.pack_agent`), starts it on loopback and returns an
:class:`AgentProcess` with its URL; ``block_imports`` makes that process and its worker refuse to import the named
packages, which shows that the light install (onnxruntime and numpy) is all the agent needs.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AgentProcess", "spawn_agent", "HEAVY"]

#: Packages of a full install that the agent must not need.
HEAVY = ("torch", "pandas", "onnx", "sklearn", "scipy", "tqdm", "skops", "matplotlib")

_BLOCKER = '''
import os, sys
_blocked = [b for b in os.environ.get("HWNAS_BLOCK_IMPORTS", "").split(",") if b]
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _blocked:
            raise ImportError(f"{name} is blocked: the measurement agent must run without it")
        return None
sys.meta_path.insert(0, _Block())
'''


@dataclass
class AgentProcess:
    """A running agent: its process, URL (``http://127.0.0.1:port``), token and the output it printed."""

    proc: subprocess.Popen
    url: str
    token: str
    port: int
    lines: list[str] = field(default_factory=list)

    def device(self, name: str = "cpu-ort-1t") -> str:
        """The ``remote:`` spec of one of its devices."""
        return f"remote:{self.url}/{name}"

    def kill(self) -> None:
        """SIGKILL the agent (its worker dies with it: the agent's process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def spawn_agent(token: str = "hwnas-test-token", port: int = 0, args: tuple[str, ...] = (),
                block_imports: tuple[str, ...] = (), workdir: str | os.PathLike | None = None,
                start_timeout_s: float = 300.0) -> AgentProcess:
    """Start ``python hwnas-agent.pyz serve`` on 127.0.0.1 (``port=0``: a free port) and wait until it listens."""
    from hwnas.device_agent import pack_agent

    work = Path(workdir or tempfile.mkdtemp(prefix="hwnas-agent-run-"))
    work.mkdir(parents=True, exist_ok=True)
    pyz = work / "hwnas-agent.pyz"
    if not pyz.exists():
        pack_agent(pyz)
    env = dict(os.environ, HWNAS_DEVICE_TOKEN=token)
    env.pop("PYTHONPATH", None)
    if block_imports:
        site = work / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(_BLOCKER)
        env["PYTHONPATH"] = str(site)
        env["HWNAS_BLOCK_IMPORTS"] = ",".join(block_imports)
    proc = subprocess.Popen([sys.executable, str(pyz), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(work),
                            start_new_session=True)
    lines: list[str] = []
    found: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            m = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)", line)
            if m:
                found.put(int(m.group(1)))
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + start_timeout_s
    while True:
        try:
            got = found.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            got = None
        if got is not None:
            return AgentProcess(proc, f"http://127.0.0.1:{got}", token, got, lines)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the measurement agent did not start: " + " | ".join(lines[-10:]))
