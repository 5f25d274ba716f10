"""Start and stop the embedded MongoDB-wire-compatible engine (PyPI ``nx-27017``).

Used when no ``MONGODB_URL`` is given: the engine runs as a child process on
a loopback port picked here, keeping its data (SQLite files) under a folder.

The engine never outlives its server: on Linux it gets SIGTERM when the
process that started it dies, even by SIGKILL (``PR_SET_PDEATHSIG``); and
``start`` stops an engine that a crashed server left running on the same
folder, which would otherwise keep the folder's pid file and refuse to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

# Runs in the child before it becomes the engine: ask the kernel for SIGTERM
# when the parent dies (prctl 1 = PR_SET_PDEATHSIG; kept across exec), then exec.
_LAUNCHER = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except (AttributeError, OSError):
    pass  # not Linux: the engine is still stopped by stop()
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)  # the parent died before prctl took effect
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedMongo:
    """A child ``nx-27017`` process; ``url`` is valid between ``start`` and ``stop``."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Connection string for PyMongo (use ``directConnection=True``)."""
        return f"mongodb://{self.host}:{self.port}/"

    async def start(self, timeout: float = 30.0) -> None:
        """Start the engine and wait until its port accepts connections."""
        folder = self.data_dir.resolve() / "mongo"
        folder.mkdir(parents=True, exist_ok=True)
        await _stop_stale_engine(folder)
        self.port = free_port(self.host)
        cmd = [
            sys.executable,
            "-c",
            _LAUNCHER,
            str(os.getpid()),
            "-W",
            "ignore::RuntimeWarning",
            "-m",
            "nx_27017.nx_27017",
            "--data-dir",
            str(folder),
            "--host",
            self.host,
            "-p",
            str(self.port),
            "--log-file",
            str(folder / "engine.log"),
            "--pid-file",
            str(folder / "engine.pid"),
        ]
        self._proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed argv, returns at once
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"embedded MongoDB engine exited with {self._proc.returncode}; "
                    f"see {folder / 'engine.log'}"
                )
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                if loop.time() > deadline:
                    await self.stop()
                    raise RuntimeError("embedded MongoDB engine did not start in time") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        """Terminate the engine (then kill it if it lingers)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)


def _engine_pid(folder: Path) -> int | None:
    """The pid in the folder's pid file if it is a live engine serving this folder."""
    try:
        pid = int((folder / "engine.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None  # no pid file, no such process, or no /proc: nothing we may stop
    if not any(b"nx_27017" in a for a in argv) or str(folder).encode() not in argv:
        return None  # the pid was reused by another program
    return pid


async def _stop_stale_engine(folder: Path, timeout: float = 10.0) -> None:
    """Stop an engine left running on ``folder`` by a server that crashed."""
    pid = _engine_pid(folder)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _engine_pid(folder) == pid:
        if loop.time() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = loop.time() + timeout
        await asyncio.sleep(0.05)
