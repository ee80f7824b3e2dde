"""Which identities this process delivers from which outbox file, and the locks telling other processes.

Two live clients of one identity on one file would both deliver its queue, so a claim holds one
byte of ``{path}-lock`` (a POSIX record lock, at an offset derived from the identity) for as long
as the client is open. The operating system drops it when the process ends, however it ends, so a
process restarted after ``SIGKILL`` claims the identity again at once. Used from the disk thread only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys

from aioiothub.exceptions import OutboxInUseError, OutboxStorageError

__all__ = ["HeldLocks", "hold_identity", "release_identity"]


class HeldLocks:
    """The identities this process delivers from one file, each holding a byte of ``{path}-lock``.

    POSIX record locks belong to the process, and closing any descriptor of the file drops all of
    them: so there is one descriptor per file for the whole process, and the identities held in the
    process are checked here rather than by the lock.
    """

    def __init__(self) -> None:
        self.identities: dict[str, int] = {}
        self._descriptor: int | None = None

    def lock(self, path: str, identity: str) -> None:
        offset = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:6], "big")
        if sys.platform != "win32":  # no POSIX record locks there: only this process's check applies
            import fcntl

            if self._descriptor is None:
                try:
                    self._descriptor = os.open(path + "-lock", os.O_RDWR | os.O_CREAT, 0o644)
                except OSError as exc:
                    raise OutboxStorageError(
                        f"outbox {path!r}: cannot create its lock file ({exc.strerror})", path=path
                    ) from None
            try:
                fcntl.lockf(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError:
                raise OutboxInUseError(
                    f"outbox {path!r}: another process already delivers the queue of {identity!r}",
                    path=path,
                    identity=identity,
                ) from None
        self.identities[identity] = offset

    def unlock(self, identity: str) -> None:
        offset = self.identities.pop(identity, None)
        if offset is not None and self._descriptor is not None and sys.platform != "win32":
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.lockf(self._descriptor, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


#: The identities held in this process, by the outbox file's real path (disk thread only).
_identity_locks: dict[str, HeldLocks] = {}


def hold_identity(path: str, identity: str) -> None:
    """Claim ``identity`` in the file at ``path`` for this process.

    Raises:
        OutboxInUseError: a client of this process or another already holds it.
        OutboxStorageError: the lock file cannot be created.
    """
    held = _identity_locks.setdefault(os.path.realpath(path), HeldLocks())
    if identity in held.identities:
        raise OutboxInUseError(
            f"outbox {path!r}: another client in this process already delivers the queue of {identity!r}",
            path=path,
            identity=identity,
        )
    held.lock(path, identity)


def release_identity(path: str, identity: str) -> None:
    """Give ``identity`` back; the lock file is closed with the last identity of the file."""
    key = os.path.realpath(path)
    held = _identity_locks.get(key)
    if held is not None:
        held.unlock(identity)
        if not held.identities:
            held.close()
            del _identity_locks[key]
