"""Where a running emulator puts the files it writes (the CA file, the IoT Edge workload sockets).

With a state directory they live there at fixed names, so a restarted emulator prints the same
paths and leaves nothing elsewhere. Without one they are temporary, named
``aioiothub-emulator-{kind}-{pid}-…`` so that their owner is known: the emulator removes them when
it stops, and a process that could not (killed with SIGKILL, say) has its leftovers removed by the
next emulator that starts, once no process with that id is running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["ca_file", "remove", "remove_stale", "state_file", "temporary_directory", "temporary_file"]

logger = logging.getLogger("aioiothub.emulator")

_PREFIX: Final = "aioiothub-emulator-"
_OWNED = re.compile(rf"{re.escape(_PREFIX)}[a-z]+-(\d+)-")


def _private_write(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def state_file(directory: Path, name: str, data: bytes) -> Path:
    """``directory / name`` (as an absolute path, for printing) holding ``data``; written only when
    it holds something else."""
    path = (directory / name).absolute()
    try:
        if path.read_bytes() == data:
            return path
    except FileNotFoundError:
        pass
    _private_write(path, data)
    return path


def temporary_file(kind: str, suffix: str, data: bytes) -> Path:
    """A new temporary file holding ``data``, named after this process (see the module docstring)."""
    descriptor, name = tempfile.mkstemp(prefix=f"{_PREFIX}{kind}-{os.getpid()}-", suffix=suffix)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return Path(name)


def ca_file(directory: Path | None, ca_pem: bytes, *, own_certificate: bool) -> Path:
    """Write the CA clients trust: ``ca.pem`` in a state directory (``server-ca.pem`` when the
    emulator serves a certificate of its own), else a temporary file."""
    if directory is None:
        return temporary_file("ca", ".pem", ca_pem)
    return state_file(directory, "server-ca.pem" if own_certificate else "ca.pem", ca_pem)


def remove(path: Path) -> None:
    """Delete a file this module wrote, if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def temporary_directory(kind: str) -> Path:
    """A new temporary directory, named after this process (see the module docstring)."""
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{kind}-{os.getpid()}-"))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale(directory: Path | None = None) -> None:
    """Remove the temporary files of emulators whose process is no longer running."""
    if sys.platform == "win32":
        return  # os.kill(pid, 0) would terminate the process there, not probe it
    where = directory if directory is not None else Path(tempfile.gettempdir())
    try:
        candidates = list(where.glob(f"{_PREFIX}*"))
    except OSError:
        return
    for path in candidates:
        match = _OWNED.match(path.name)
        if match is None:
            continue
        pid = int(match[1])
        if pid == os.getpid() or _running(pid):
            continue
        logger.info("removing %s, left behind by emulator process %d", path, pid)
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
