"""Registered devices and modules: ids, credentials, status, and how each is named in messages."""

from __future__ import annotations

import datetime
import os
import secrets
from pathlib import Path
from typing import Literal, TypeAlias

from aioiothub.protocol.connect import client_id
from aioiothub.protocol.connection_string import ConnectionString

__all__ = ["Authentication", "DeviceIdentity", "Identity", "IdentityKey", "ModuleIdentity"]

Authentication: TypeAlias = Literal["sas", "x509", "x509_ca"]
"""How an identity authenticates: a shared access key, a self-signed certificate known by its
thumbprint, or a certificate issued by the emulator's CA with the identity's id as common name."""

IdentityKey: TypeAlias = tuple[str, str | None]
"""``(device_id, module_id)``: how the hub indexes everything it keeps per identity."""


class Identity:
    """A registered device or module: its id, credentials and status.

    Identities are created by :meth:`Hub.add_device <aioiothub.emulator.Hub.add_device>` and
    :meth:`Hub.add_module <aioiothub.emulator.Hub.add_module>`; the hub keeps the same object and
    updates :attr:`enabled` and :attr:`model_id` on it. Keys and private keys are left out of the repr.

    Attributes:
        hostname: the hub's host name, used in :attr:`connection_string`.
        device_id: the device id.
        module_id: the module id, or ``None`` for a device.
        authentication: ``"sas"``, ``"x509"`` (self-signed certificate, known by thumbprint) or
            ``"x509_ca"`` (certificate issued by the emulator's CA with CN = the id).
        primary_key: the primary shared access key (``None`` for X.509 identities).
        secondary_key: the secondary shared access key (``None`` for X.509 identities).
        certificate_pem: the client certificate (X.509 identities), else ``None``.
        private_key_pem: the certificate's private key when the hub generated it, else ``None``.
        thumbprints: upper-case hex SHA-1 and SHA-256 thumbprints accepted for an ``"x509"`` identity.
        model_id: the Plug and Play model id announced at the last accepted connection, or ``None``.
        product_info: the ``DeviceClientType`` announced at the last accepted connection, or ``None``.
        generation_id: IoT Hub's id for this incarnation of the identity (a re-created identity
            gets a new one).
        revision: bumped at every change of the registry entry; the service API's ``etag`` is
            derived from it.
        status_reason: the reason given with the last status change, or ``None``.
        status_updated_time: when the status last changed (UTC).
        iot_edge: whether the device is an IoT Edge device (devices only).
        managed_by: who manages the module (``managedBy``), or ``None``.
        connection_state_updated_time: when the identity last connected or disconnected (UTC), or
            ``None`` if it never connected.
        last_activity_time: when the identity last connected, disconnected, sent telemetry, used
            its twin, answered a method or completed a cloud message (UTC), or ``None``.
    """

    __slots__ = (
        "_enabled",
        "_label",
        "authentication",
        "certificate_pem",
        "connection_state_updated_time",
        "device_id",
        "generation_id",
        "hostname",
        "iot_edge",
        "last_activity_time",
        "managed_by",
        "model_id",
        "module_id",
        "primary_key",
        "private_key_pem",
        "product_info",
        "revision",
        "secondary_key",
        "status_reason",
        "status_updated_time",
        "thumbprints",
    )

    def __init__(
        self,
        *,
        hostname: str,
        device_id: str,
        module_id: str | None,
        authentication: Authentication,
        primary_key: str | None = None,
        secondary_key: str | None = None,
        certificate_pem: bytes | None = None,
        private_key_pem: bytes | None = None,
        thumbprints: frozenset[str] = frozenset(),
    ) -> None:
        self.hostname = hostname
        self.device_id = device_id
        self.module_id = module_id
        self.authentication: Authentication = authentication
        self.primary_key = primary_key
        self.secondary_key = secondary_key
        self.certificate_pem = certificate_pem
        self.private_key_pem = private_key_pem
        self.thumbprints = thumbprints
        self.model_id: str | None = None
        self.product_info: str | None = None
        self.generation_id = str(secrets.randbelow(10**18))
        self.revision = 1
        self.status_reason: str | None = None
        self.status_updated_time = datetime.datetime.now(datetime.UTC)
        self.iot_edge = False
        self.managed_by: str | None = None
        # Not registry changes (no new revision or etag), and not persisted: IoT Hub's own
        # bookkeeping of what the identity did.
        self.connection_state_updated_time: datetime.datetime | None = None
        self.last_activity_time: datetime.datetime | None = None
        self._enabled = True
        self._label = client_id(device_id, module_id)

    @property
    def key(self) -> IdentityKey:
        """``(device_id, module_id)``: how the hub indexes identities."""
        return (self.device_id, self.module_id)

    @property
    def label(self) -> str:
        """``"dev1"`` or ``"dev1/mod1"``: the identity's MQTT client id, and its name in messages and logs."""
        return self._label

    @property
    def enabled(self) -> bool:
        """Whether the identity may connect (see :meth:`Hub.set_device_status`)."""
        return self._enabled

    def mark_active(self, moment: datetime.datetime | None = None) -> None:
        """Record activity (telemetry, twin or method traffic) at ``moment`` (default: now)."""
        self.last_activity_time = moment or datetime.datetime.now(datetime.UTC)

    def mark_connection_state(self) -> None:
        """Record a connect or disconnect now: both the state change and activity."""
        now = datetime.datetime.now(datetime.UTC)
        self.connection_state_updated_time = now
        self.last_activity_time = now

    def set_enabled(self, enabled: bool) -> None:
        """Record the identity's status.

        :meth:`Hub.set_device_status <aioiothub.emulator.Hub.set_device_status>` calls this and also
        closes the connections of a disabled device; use that to change a status.
        """
        if bool(enabled) != self._enabled:
            self.status_updated_time = datetime.datetime.now(datetime.UTC)
        self._enabled = bool(enabled)

    @property
    def connection_string(self) -> str:
        """The connection string a device or module uses to connect.

        ``HostName=…;DeviceId=…[;ModuleId=…];SharedAccessKey=…`` for SAS identities and
        ``HostName=…;DeviceId=…[;ModuleId=…];x509=true`` for X.509 ones.
        """
        return ConnectionString(
            host_name=self.hostname,
            device_id=self.device_id,
            module_id=self.module_id,
            shared_access_key=self.primary_key,
            x509=self.authentication != "sas",
        ).to_text(reveal_secrets=True)

    def write_certificate_files(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write the certificate and its private key as PEM files into ``directory``.

        Example:
            >>> cert_file, key_file = identity.write_certificate_files(tmp_path)  # doctest: +SKIP

        Returns:
            ``(certificate path, key path)``; the key file is readable by its owner only.

        Raises:
            ValueError: the identity has no certificate with a private key.
        """
        if self.certificate_pem is None or self.private_key_pem is None:
            raise ValueError(f"identity {self.label} has no certificate and private key to write")
        # A file name cannot hold the "/" of a module's label.
        stem = self.device_id if self.module_id is None else f"{self.device_id}-{self.module_id}"
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        folder = Path(directory)
        cert_path = folder / f"{stem}.cert.pem"
        key_path = folder / f"{stem}.key.pem"
        cert_path.write_bytes(self.certificate_pem)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(self.private_key_pem)
        return cert_path, key_path

    def __repr__(self) -> str:
        module = "" if self.module_id is None else f", module_id={self.module_id!r}"
        return (
            f"{type(self).__name__}(device_id={self.device_id!r}{module}, "
            f"authentication={self.authentication!r}, enabled={self._enabled!r})"
        )


class DeviceIdentity(Identity):
    """A registered device (see :class:`Identity`); ``module_id`` is always ``None``.

    Example:
        >>> device = hub.add_device("dev1")  # doctest: +SKIP
        >>> device.connection_string  # doctest: +SKIP
        'HostName=localhost;DeviceId=dev1;SharedAccessKey=...'
    """

    __slots__ = ()


class ModuleIdentity(Identity):
    """A registered module of a device (see :class:`Identity`).

    Example:
        >>> module = hub.add_module("dev1", "mod1")  # doctest: +SKIP
        >>> module.connection_string  # doctest: +SKIP
        'HostName=localhost;DeviceId=dev1;ModuleId=mod1;SharedAccessKey=...'
    """

    __slots__ = ()

    module_id: str
