"""A state directory: identities, twins and queued cloud messages in one SQLite file, across restarts.

Theory of operation
-------------------
:class:`StateStore` is the :class:`~aioiothub.emulator.hub.observer.StateObserver` of a hub started
with a state directory. The registry, the twins and the cloud queues report each change right after
making it, and the store writes it in a transaction of its own (SQLite from the standard library, in
WAL mode), so a killed process loses at most the change being written. At start-up
:meth:`StateStore.load` reads everything back for
:func:`~aioiothub.emulator.hub.management.restore_state`; queued messages whose time to
live ran out while the emulator was stopped are dropped then.

The directory also keeps the emulator's CA (``ca.pem``, ``ca.key.pem``), so devices that trust it
keep trusting the restarted emulator. The key files are readable by their owner only; the database
holds device keys too, so it is created the same way. The built-in endpoint's events are kept
beside it, in a file of their own written in batches (:attr:`StateStore.events`,
:mod:`~aioiothub.emulator.storage.event_store`); the telemetry kept for ``Hub.telemetry()`` is not.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from aioiothub.emulator.certs import CertificateAuthority
from aioiothub.emulator.hub.identity import DeviceIdentity, Identity, IdentityKey, ModuleIdentity
from aioiothub.emulator.hub.management import RestoredState
from aioiothub.emulator.hub.queues import CloudMessage
from aioiothub.emulator.storage.event_store import EventStore

__all__ = ["DATABASE_NAME", "StateStore", "load_certificate_authority"]

DATABASE_NAME: Final = "state.sqlite3"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS identities (device_id TEXT NOT NULL, module_id TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (device_id, module_id));
CREATE TABLE IF NOT EXISTS twins (device_id TEXT NOT NULL, module_id TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (device_id, module_id));
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
    module_id TEXT NOT NULL, topic TEXT NOT NULL, body BLOB NOT NULL, expires_at REAL NOT NULL,
    message_id TEXT NOT NULL, ack TEXT NOT NULL);
"""


def _private_file(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def load_certificate_authority(directory: Path) -> CertificateAuthority:
    """The CA kept in ``directory``, generated and written there the first time."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key.pem"
    if cert_path.exists() and key_path.exists():
        return CertificateAuthority.load(cert_path.read_bytes(), key_path.read_bytes())
    authority = CertificateAuthority.generate()
    _private_file(key_path, authority.key_pem)
    cert_path.write_bytes(authority.certificate_pem)
    return authority


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _identity_data(identity: Identity) -> dict[str, Any]:
    return {
        "authentication": identity.authentication,
        "primary_key": identity.primary_key,
        "secondary_key": identity.secondary_key,
        "certificate_pem": _b64(identity.certificate_pem),
        "private_key_pem": _b64(identity.private_key_pem),
        "thumbprints": sorted(identity.thumbprints),
        "enabled": identity.enabled,
        "generation_id": identity.generation_id,
        "revision": identity.revision,
        "status_reason": identity.status_reason,
        "status_updated_time": identity.status_updated_time.isoformat(),
        "iot_edge": identity.iot_edge,
        "managed_by": identity.managed_by,
    }


def _identity(hostname: str, device_id: str, module_id: str | None, data: dict[str, Any]) -> Identity:
    kind = DeviceIdentity if module_id is None else ModuleIdentity
    identity = kind(
        hostname=hostname,
        device_id=device_id,
        module_id=module_id,
        authentication=data["authentication"],
        primary_key=data["primary_key"],
        secondary_key=data["secondary_key"],
        certificate_pem=_unb64(data["certificate_pem"]),
        private_key_pem=_unb64(data["private_key_pem"]),
        thumbprints=frozenset(data["thumbprints"]),
    )
    identity.set_enabled(data["enabled"])
    identity.generation_id = data["generation_id"]
    identity.revision = data["revision"]
    identity.status_reason = data["status_reason"]
    identity.status_updated_time = datetime.datetime.fromisoformat(data["status_updated_time"])
    identity.iot_edge = data["iot_edge"]
    identity.managed_by = data["managed_by"]
    return identity


def _columns(key: IdentityKey) -> tuple[str, str]:
    # SQLite treats NULLs as distinct in a primary key: a device's module column is "".
    return key[0], key[1] or ""


class StateStore:
    """The SQLite file of a state directory, written through by the hub (see the module docstring).

    Example:
        >>> store = StateStore(Path("state"))  # doctest: +SKIP
        >>> restore_state(hub.core, store.load(hub.hostname), store)  # doctest: +SKIP

    Args:
        directory: the state directory; created when missing.

    Raises:
        OSError: the directory cannot be created.
        sqlite3.DatabaseError: the file is not a database of this emulator.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / DATABASE_NAME
        if not path.exists():
            _private_file(path, b"")
        # isolation_level=None: each change commits in the explicit transaction written for it.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Which row holds each queued message, so acknowledging one deletes exactly that row.
        self._message_rows: dict[int, int] = {}
        self.events = EventStore(self.directory)
        """The built-in endpoint's events, in ``events.sqlite3`` beside this file."""

    def close(self) -> None:
        """Close the databases (write the events still to be written first: ``store.events.flush()``)."""
        self._db.close()
        self.events.close()

    def _write(self, statement: str, parameters: tuple[Any, ...]) -> int:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(statement, parameters)
        return cursor.lastrowid or 0

    # --- reading ------------------------------------------------------------------------------

    def load(self, hostname: str) -> RestoredState:
        """Everything kept, for :func:`~aioiothub.emulator.hub.management.restore_state`; expired ones deleted."""
        identities = [
            _identity(hostname, device_id, module_id or None, json.loads(data))
            for device_id, module_id, data in self._db.execute(
                "SELECT device_id, module_id, data FROM identities ORDER BY rowid"
            )
        ]
        twins = {
            (device_id, module_id or None): json.loads(data)
            for device_id, module_id, data in self._db.execute("SELECT device_id, module_id, data FROM twins")
        }
        wall, monotonic = time.time(), time.monotonic()
        self._write("DELETE FROM messages WHERE expires_at <= ?", (wall,))
        messages: list[tuple[IdentityKey, CloudMessage]] = []
        rows = self._db.execute(
            "SELECT id, device_id, module_id, topic, body, expires_at, message_id, ack FROM messages ORDER BY id"
        )
        for row_id, device_id, module_id, topic, body, expires_at, message_id, ack in rows:
            message = CloudMessage(topic, bytes(body), monotonic + (expires_at - wall), message_id=message_id, ack=ack)
            self._message_rows[id(message)] = row_id
            messages.append(((device_id, module_id or None), message))
        return identities, twins, messages

    # --- the StateObserver protocol -----------------------------------------------------------

    def identity_saved(self, identity: Identity) -> None:
        """Write an identity's registry entry."""
        self._write(
            "INSERT OR REPLACE INTO identities (device_id, module_id, data) VALUES (?, ?, ?)",
            (*_columns(identity.key), json.dumps(_identity_data(identity))),
        )

    def identity_removed(self, key: IdentityKey) -> None:
        """Delete an identity with its twin and messages, in one transaction."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for table in ("identities", "twins", "messages"):
                self._db.execute(f"DELETE FROM {table} WHERE device_id = ? AND module_id = ?", _columns(key))

    def twin_saved(self, key: IdentityKey, state: dict[str, Any]) -> None:
        """Write a twin."""
        self._write(
            "INSERT OR REPLACE INTO twins (device_id, module_id, data) VALUES (?, ?, ?)",
            (*_columns(key), json.dumps(state)),
        )

    def message_queued(self, key: IdentityKey, message: CloudMessage) -> None:
        """Write a queued message (its expiry as wall-clock time)."""
        expires_at = time.time() + (message.expires_at - time.monotonic())
        self._message_rows[id(message)] = self._write(
            "INSERT INTO messages (device_id, module_id, topic, body, expires_at, message_id, ack)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*_columns(key), message.topic, message.body, expires_at, message.message_id, message.ack),
        )

    def message_removed(self, key: IdentityKey, message: CloudMessage) -> None:
        """Delete an acknowledged or expired message."""
        row = self._message_rows.pop(id(message), None)
        if row is not None:
            self._write("DELETE FROM messages WHERE id = ?", (row,))
