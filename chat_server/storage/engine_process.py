"""The embedded engine's own process: ``python -m chat_server.storage.engine_process``.

Serves ``nx-27017`` (the MongoDB wire protocol over SQLite files) on a Unix
socket, never on a TCP port: the engine has no authentication, so who may
open the socket is who may read and write the store. The socket and the data
files are created with umask 077 inside a 0700 folder, so only the server's
own user can connect to it or read the files (``docs/security.md``).

One engine per folder: the engine holds an exclusive ``flock`` on
``engine.lock`` for its whole life. A lock dies with its process (a SIGKILL,
a zombie waiting for its parent), so a pid file left behind, or naming an
unrelated live process, can never keep a new engine from starting.

Exit status 3: another engine serves the folder. Warnings and errors go to
stderr, which the server logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

EXIT_FOLDER_BUSY = 3


def _die_with_parent(parent: int) -> bool:
    """Ask the kernel for SIGTERM when the parent dies; False if it already has."""
    with contextlib.suppress(AttributeError, OSError):
        # prctl 1 = PR_SET_PDEATHSIG. Not Linux: the server's stop() still stops us.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    return os.getppid() == parent


async def _serve(folder: Path, sock: Path) -> None:
    # Imported here: only this process loads the engine.
    from nx_27017.handler import NeoSQLiteHandler  # type: ignore[import-untyped,unused-ignore]
    from nx_27017.server import handle_client  # type: ignore[import-untyped,unused-ignore]

    handler = NeoSQLiteHandler(str(folder / "nx-27017.db"), data_dir=str(folder))

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle_client(reader, writer, handler)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)  # left by an engine that died: we hold the folder's lock
    server = await asyncio.start_unix_server(client, path=str(sock))
    os.chmod(sock, 0o600)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            handler.close_all()


def main(argv: list[str] | None = None) -> int:
    """Run the engine until SIGTERM; see the module docstring."""
    ap = argparse.ArgumentParser(prog="engine_process")
    ap.add_argument("--folder", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--parent", type=int, default=0)
    args = ap.parse_args(argv)
    os.umask(0o077)
    if args.parent and not _die_with_parent(args.parent):
        return 0  # the server died before we could tie our life to it
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    folder = Path(args.folder)
    with (folder / "engine.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another engine is serving {folder}", file=sys.stderr, flush=True)
            return EXIT_FOLDER_BUSY
        pid_file = folder / "engine.pid"
        pid_file.write_text(str(os.getpid()))
        sock = Path(args.socket)
        try:
            asyncio.run(_serve(folder, sock))
        finally:
            with contextlib.suppress(OSError):
                pid_file.unlink()
            with contextlib.suppress(OSError):
                sock.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
