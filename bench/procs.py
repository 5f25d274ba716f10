"""Start, watch and stop the processes under test, pinned to the server core(s).

Every server listens on 127.0.0.1 on a port picked here. Processes are
started through ``taskset`` so that every thread (and child) they make runs
on the server CPUs; their CPU time and RSS are read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_list(cpus: set[int]) -> str:
    """``{0, 1}`` -> ``"0,1"``."""
    return ",".join(str(c) for c in sorted(cpus))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def with_children(pid: int) -> list[int]:
    """``pid`` and its live descendants (a server's verifier child process)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 64:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += map(int, Path(f"/proc/{p}/task/{task}/children").read_text().split())
        except OSError:
            continue
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pin_all_threads(pid: int, cpus: set[int]) -> None:
    """Pin every existing thread of ``pid`` (new threads inherit the pinning)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


@dataclass
class Proc:
    """One started process and where it listens."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal it, wait, then kill if it lingers."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Group:
    """The processes of one server under test (one or two web processes)."""

    name: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(HOST, p.port) for p in self.procs]

    def cpu(self) -> float:
        """CPU seconds of the server processes and their children (a verifier process)."""
        return sum(cpu_seconds(c) for p in self.procs for c in with_children(p.pid))

    def rss(self) -> int:
        """RSS of the server processes and their children, KiB."""
        return sum(rss_kib(c) for p in self.procs for c in with_children(p.pid))

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


STARTED: list[Proc] = []


def stop_all() -> None:
    """Stop every process this run started that is still alive (at exit, on error)."""
    while STARTED:
        STARTED.pop().stop(timeout=5)


def spawn(
    name: str, argv: list[str], env: dict[str, str], cpus: set[int], logdir: Path, port: int
) -> Proc:
    """Start ``argv`` pinned to ``cpus``, its output in ``logdir/name.log``."""
    log = logdir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            ["taskset", "-c", cpu_list(cpus), *argv],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc(name, popen, port, log)
    STARTED.append(proc)
    return proc


async def wait_http(port: int, path: str, proc: Proc | None, timeout: float) -> None:
    """Poll until ``GET path`` gets any HTTP answer (or raise with the log's tail)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while True:
        if proc is not None and not proc.alive():
            tail = proc.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if line.startswith(b"HTTP/1.1"):
                return
        except (OSError, TimeoutError):
            pass
        if loop.time() > deadline:
            raise RuntimeError(f"nothing answered on port {port} within {timeout}s")
        await asyncio.sleep(0.05)


class Redis:
    """A redis-server of our own on a free loopback port (never 6379)."""

    def __init__(self, cpus: set[int], logdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        argv = [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly"]
        argv += ["no", "--dir", self.dir, "--protected-mode", "yes"]
        self.proc = spawn("redis", argv, dict(os.environ), cpus, logdir, self.port)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def wait(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_connection(HOST, self.port)
                writer.write(b"PING\r\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 2)
                writer.close()
                if line.startswith(b"+PONG"):
                    return
            except (OSError, TimeoutError):
                pass
            if loop.time() > deadline:
                raise RuntimeError("redis-server did not start")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Engine:
    """The embedded MongoDB-wire engine (``nx-27017``), shared by the chat servers."""

    def __init__(self, cpus: set[int]) -> None:
        from chat_server.storage.embedded import EmbeddedMongo

        self.dir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
        self.engine = EmbeddedMongo(self.dir)
        self.cpus = cpus
        self.pid = 0
        self.seeded = 0
        self.keys_seeded = 0

    @property
    def url(self) -> str:
        return self.engine.url + "?directConnection=true"

    async def start(self) -> None:
        await self.engine.start()
        self.pid = int((self.dir / "mongo" / "engine.pid").read_text().strip())
        pin_all_threads(self.pid, self.cpus)

    async def seed(self, pairs: int, signed: bool = False) -> None:
        """Seed pairs up to ``pairs`` (idempotent across calls) through the Mongo stores."""
        if pairs <= self.seeded and (self.keys_seeded >= pairs or not signed):
            return
        from bench.seed import seed
        from bench.signed import seed_keys
        from chat_server.storage.mongo import MongoDatabase

        db = MongoDatabase(self.url, "cejchat")
        try:
            await db.wait_ready(30)
            await db.create_indexes()
            if pairs > self.seeded:
                await seed(db.accounts(), db.messages(), self.seeded, pairs - self.seeded, 64)
                self.seeded = pairs
            if signed and pairs > self.keys_seeded:
                await seed_keys(db.keys(), self.keys_seeded, pairs - self.keys_seeded)
                self.keys_seeded = pairs
        finally:
            await db.close()

    async def stop(self) -> None:
        await self.engine.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """Make sure the engine is gone (after an interrupted ``stop``)."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.pid = 0
        shutil.rmtree(self.dir, ignore_errors=True)


def python() -> str:
    """The interpreter of this virtualenv."""
    return sys.executable


def now() -> float:
    return time.time()
