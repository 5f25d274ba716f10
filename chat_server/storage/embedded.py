"""Start, supervise and stop the embedded MongoDB-wire-compatible engine (PyPI ``nx-27017``).

Used when no ``MONGODB_URL`` is given: the engine runs as a child process
(``engine_process``) serving a Unix socket in a private (0700) folder, keeping
its data (SQLite files, 0600) under ``<data_dir>/mongo``.

- Supervised: if the engine exits while the server runs, it is started again
  with backoff (0.5 s, doubling up to 10 s) on the same socket, so the
  driver's URL stays valid and the store comes back by itself. Each exit and
  restart is one log line; the engine's stderr goes to the server's log.
- Never outlives its server: on Linux it gets SIGTERM when the process that
  started it dies, even by SIGKILL (``PR_SET_PDEATHSIG``).
- One engine per folder (an ``flock`` held by the engine): ``start`` stops an
  engine that a crashed server left running on the folder (checked by its
  command line, so a stale pid file naming another program is ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

ENGINE_MODULE = "chat_server.storage.engine_process"
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
# Linux's sun_path holds 108 bytes: longer socket paths go to a private temporary folder.
_MAX_SOCKET_PATH = 100


class EngineError(RuntimeError):
    """The embedded engine could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_private(folder: Path) -> None:
    """Create ``folder`` 0700 and make what it already holds readable by its owner only."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            path.chmod(0o700 if path.is_dir() else 0o600)


class EmbeddedMongo:
    """A child engine process; ``url`` is valid from ``start`` to ``stop``, restarts included."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.folder = data_dir.resolve() / "mongo"
        sock = self.folder / "engine.sock"
        self._own_sock_dir: Path | None = None
        if len(str(sock)) > _MAX_SOCKET_PATH:
            self._own_sock_dir = Path(tempfile.mkdtemp(prefix="cejchat-engine-"))
            sock = self._own_sock_dir / "engine.sock"
        self.socket = sock
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def url(self) -> str:
        """Connection string for PyMongo (use ``directConnection=True``)."""
        return "mongodb://" + quote(str(self.socket), safe="") + "/"

    @property
    def pid(self) -> int | None:
        """The running engine's pid."""
        return self._proc.pid if self._proc is not None else None

    async def start(self, timeout: float = 30.0) -> None:
        """Start the engine and wait until its socket accepts connections."""
        make_private(self.folder)
        await _stop_stale_engine(self.folder)
        await self._spawn(timeout)

    def supervise(self) -> None:
        """Restart the engine whenever it exits until ``stop`` (call on the serving loop)."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name="embedded-engine-supervisor"
            )

    async def _spawn(self, timeout: float) -> None:
        cmd = [
            sys.executable,
            "-m",
            ENGINE_MODULE,
            "--folder",
            str(self.folder),
            "--socket",
            str(self.socket),
            "--parent",
            str(os.getpid()),
        ]
        proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed argv, returns at once
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._proc = proc
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        self._exited = exited
        tail: list[str] = []
        threading.Thread(
            target=_pump_stderr, args=(proc, tail, loop, exited), daemon=True
        ).start()
        deadline = loop.time() + timeout
        while True:
            if proc.poll() is not None:
                await asyncio.sleep(0.05)  # let the pump read the last lines
                raise EngineError(
                    f"embedded MongoDB engine exited with {proc.returncode}: "
                    + (" | ".join(tail[-3:]) or "no output")
                )
            try:
                _, writer = await asyncio.open_unix_connection(str(self.socket))
            except OSError:
                if loop.time() > deadline:
                    await self._terminate(proc)
                    raise EngineError("embedded MongoDB engine did not start in time") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def _supervise(self) -> None:
        backoff = BACKOFF_FIRST
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._stopping:
            exited, proc = self._exited, self._proc
            if exited is None or proc is None:
                return
            await exited.wait()
            if self._stopping:
                return
            if loop.time() - started > 60:
                backoff = BACKOFF_FIRST  # it had been running well: a fresh crash
            log.warning(
                "embedded MongoDB engine exited with %s; restarting in %.1f s",
                proc.wait(),
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            if self._stopping:
                return
            try:
                await _stop_stale_engine(self.folder)
                await self._spawn(30.0)
            except EngineError as exc:
                log.warning("embedded MongoDB engine restart failed: %s", exc)
                continue
            started = loop.time()
            self.restarts += 1
            log.warning("embedded MongoDB engine restarted", extra={"count": self.restarts})

    async def stop(self) -> None:
        """Stop supervising, terminate the engine (then kill it if it lingers)."""
        self._stopping = True
        sup, self._supervisor = self._supervisor, None
        if sup is not None:
            sup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sup
        proc, self._proc = self._proc, None
        if proc is not None:
            await self._terminate(proc)
        if self._own_sock_dir is not None:
            with contextlib.suppress(OSError):
                self._own_sock_dir.rmdir()

    @staticmethod
    async def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)


def _pump_stderr(
    proc: subprocess.Popen[bytes],
    tail: list[str],
    loop: asyncio.AbstractEventLoop,
    exited: asyncio.Event,
) -> None:
    """Thread: log the engine's stderr line by line; at its end, reap it and set ``exited``."""
    try:
        stream = proc.stderr
        if stream is not None:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    tail.append(line)
                    del tail[:-20]
                    log.warning("engine: %s", line[:500])
            stream.close()
        proc.wait()
        loop.call_soon_threadsafe(exited.set)
    except Exception:  # noqa: S110 - the loop is closed: nobody is waiting any more
        pass


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _engine_pid(folder: Path) -> int | None:
    """The pid in the folder's pid file if it is a live engine serving this folder."""
    try:
        pid = int((folder / "engine.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None  # no pid file, no such process, or no /proc: nothing we may stop
    if not _alive(pid):
        return None  # a zombie holds no lock and serves nothing
    engine = (ENGINE_MODULE.encode(), b"nx_27017")
    if not any(e in a for a in argv for e in engine) or str(folder).encode() not in argv:
        return None  # the pid was reused by another program
    return pid


def _engine_owner(pid: int) -> int | None:
    """The live server process that started engine ``pid`` (its ``--parent``), if any."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        owner = int(argv[argv.index(b"--parent") + 1])
    except (OSError, ValueError, IndexError):
        return None
    return owner if owner != os.getpid() and _alive(owner) else None


async def _stop_stale_engine(folder: Path, timeout: float = 10.0) -> None:
    """Stop an engine left running on ``folder`` by a server that crashed."""
    pid = _engine_pid(folder)
    if pid is None:
        return
    owner = _engine_owner(pid)
    if owner is not None:
        raise EngineError(
            f"the data folder {folder} is in use by another server process (pid {owner}): "
            "stop it first, or give both the same MONGODB_URL"
        )
    log.warning("stopping an engine left running on the data folder", extra={"count": pid})
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
