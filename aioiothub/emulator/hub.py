"""The emulated hub's state and its service-side API: everything IoT Hub keeps, without any sockets.

Theory of operation
-------------------
:class:`Hub` holds the identity registry (devices and modules with their keys, status and X.509
thumbprints), one twin per identity, one queue of cloud-to-device messages (or module input messages)
per identity, the pending direct method calls, the received telemetry and the fault-injection
settings. Live MQTT connections (:class:`aioiothub.emulator.session.Session`) call into it: they ask
:meth:`Hub.admit` whether a CONNECT is allowed, :meth:`Hub.attach` themselves once accepted (which
closes an older connection of the same identity), and hand over telemetry, twin requests, method
responses and PUBACKs. In the other direction the hub reaches a connection only through the small
:class:`Connection` protocol, so nothing here reads or writes bytes.

A cloud-to-device message stays in its identity's queue until the device acknowledges it (PUBACK) or
its time to live runs out; each message remembers the connection it was last delivered on, so a new
connection gets every unacknowledged message again, flagged DUP. The MQTT session state that survives
a reconnect with CleanSession=0 is just the set of granted subscriptions (:class:`MqttSessionState`).

Waiting (for telemetry, for a connection) never polls: waiters sleep on an :class:`anyio.Event` that
the hub sets and replaces when something changes. Events are created lazily, so a :class:`Hub` can be
built outside an event loop.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import itertools
import json
import logging
import math
import os
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol, TypeAlias, TypeVar

import anyio
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from aioiothub.emulator.certs import (
    CertificateAuthority,
    certificate_common_name,
    certificate_thumbprints,
    generate_self_signed_certificate,
)
from aioiothub.exceptions import CredentialError, ProtocolError, ServiceError
from aioiothub.protocol.connect import parse_username, validate_identity
from aioiothub.protocol.connection_string import ConnectionString
from aioiothub.protocol.limits import MAX_C2D_BODY_BYTES, MAX_METHOD_PAYLOAD_BYTES, MAX_TELEMETRY_BYTES
from aioiothub.protocol.limits import message_wire_size as _message_wire_size
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.properties import SYSTEM_PROPERTY_KEYS
from aioiothub.protocol.sas import device_resource_uri, verify_sas_token
from aioiothub.protocol.topics import (
    METHODS_SUBSCRIPTION,
    TWIN_DESIRED_SUBSCRIPTION,
    TwinRequestTopic,
    c2d_topic,
    input_topic,
    method_request_topic,
    parse_telemetry_topic,
    twin_desired_topic,
)
from aioiothub.protocol.twin import merge_patch, validate_patch, validate_section_size

__all__ = [
    "Admission",
    "Authentication",
    "CloseConnection",
    "Connection",
    "DeviceIdentity",
    "Hub",
    "Identity",
    "MethodResult",
    "ModuleIdentity",
    "MqttSessionState",
    "TelemetryRecord",
]

logger = logging.getLogger("aioiothub.emulator")

Authentication: TypeAlias = Literal["sas", "x509", "x509_ca"]
"""How an identity authenticates: a shared access key, a self-signed certificate known by its
thumbprint, or a certificate issued by the emulator's CA with the identity's id as common name."""

AckMode: TypeAlias = Literal["none", "positive", "negative", "full"]

IdentityKey: TypeAlias = tuple[str, str | None]

# CONNACK return codes (MQTT 3.1.1 section 3.2.2.3).
CONNACK_IDENTIFIER_REJECTED: Final = 2
CONNACK_SERVER_UNAVAILABLE: Final = 3
CONNACK_NOT_AUTHORIZED: Final = 5

MAX_CLOUD_QUEUE: Final = 50
"""IoT Hub keeps at most this many cloud-to-device messages per device."""

DEFAULT_C2D_TTL: Final = 3600.0
_ACK_MODES: Final = frozenset({"none", "positive", "negative", "full"})
_EMPTY: Final[Mapping[str, str | None]] = MappingProxyType({})
_JSON_SEPARATORS: Final = (",", ":")
# Distinct telemetry topics remembered; a device that puts a fresh $.mid in every topic just misses.
_TOPIC_CACHE_SIZE: Final = 4096


def _now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=_JSON_SEPARATORS).encode("utf-8")


def _iso_time(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CloseConnection(Exception):
    """The connection that caused this must be closed: its device broke a rule, or a fault was injected.

    Attributes:
        reason: why, for the log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- public result and identity types --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MethodResult:
    """The outcome of :meth:`Hub.invoke_method`.

    Attributes:
        status: the status the device answered with; 404 when the identity was offline or not
            subscribed to methods, 504 when it did not answer in time.
        payload: the device's JSON answer decoded, ``None`` for an empty body, or the raw ``bytes``
            when the device answered with something that is not JSON.
    """

    status: int
    payload: Any


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    """One device-to-cloud message as the hub received it.

    Example:
        >>> record = (await hub.wait_for_telemetry(1, device_id="dev1"))[0]  # doctest: +SKIP
        >>> record.body, record.properties, record.system_properties["$.ct"]  # doctest: +SKIP
        (b'{"t":21}', {'alert': '1'}, 'application/json')

    Attributes:
        device_id: the sending device.
        module_id: the sending module, or ``None``.
        body: the message body.
        properties: the application properties (``mqtt-retain`` and ``iothub-MessageType`` included
            when the hub added them).
        system_properties: the system properties (``$.mid``, ``$.ct``, ...) under their wire names.
        enqueued_time: when the hub accepted the message (UTC).
    """

    device_id: str
    module_id: str | None
    body: bytes
    properties: Mapping[str, str | None]
    system_properties: Mapping[str, str | None]
    enqueued_time: datetime.datetime

    @property
    def annotations(self) -> dict[str, str]:
        """The annotations IoT Hub stamps on every message it routes.

        ``iothub-connection-device-id``, ``iothub-connection-module-id`` (modules only) and
        ``iothub-enqueuedtime`` (ISO 8601, UTC).
        """
        annotations = {"iothub-connection-device-id": self.device_id}
        if self.module_id is not None:
            annotations["iothub-connection-module-id"] = self.module_id
        annotations["iothub-enqueuedtime"] = _iso_time(self.enqueued_time)
        return annotations

    def json(self) -> Any:
        """Decode the body as JSON (UTF-8).

        Raises:
            ValueError: the body is not JSON.
        """
        return json.loads(self.body)


class Identity:
    """A registered device or module: its id, credentials and status.

    Identities are created by :meth:`Hub.add_device` and :meth:`Hub.add_module`; the hub keeps the
    same object and updates :attr:`enabled` and :attr:`model_id` on it. Keys and private keys are
    left out of the repr.

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
    """

    __slots__ = (
        "_enabled",
        "authentication",
        "certificate_pem",
        "device_id",
        "hostname",
        "model_id",
        "module_id",
        "primary_key",
        "private_key_pem",
        "product_info",
        "secondary_key",
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
        self._enabled = True

    @property
    def key(self) -> IdentityKey:
        """``(device_id, module_id)``: how the hub indexes identities."""
        return (self.device_id, self.module_id)

    @property
    def enabled(self) -> bool:
        """Whether the identity may connect (see :meth:`Hub.set_device_status`)."""
        return self._enabled

    @property
    def connection_string(self) -> str:
        """The connection string a device or module uses to connect.

        ``HostName=…;DeviceId=…[;ModuleId=…];SharedAccessKey=…`` for SAS identities and
        ``HostName=…;DeviceId=…[;ModuleId=…];x509=true`` for X.509 ones.
        """
        return str(
            ConnectionString(
                host_name=self.hostname,
                device_id=self.device_id,
                module_id=self.module_id,
                shared_access_key=self.primary_key,
                x509=self.authentication != "sas",
            )
        )

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
            raise ValueError(f"identity {self._label()} has no certificate and private key to write")
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

    def _label(self) -> str:
        return self.device_id if self.module_id is None else f"{self.device_id}/{self.module_id}"

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


_IdentityT = TypeVar("_IdentityT", bound=Identity)


# --- what the hub needs from a live connection ----------------------------------------------------


class Connection(Protocol):
    """A live, accepted MQTT connection as the hub sees it."""

    @property
    def identity(self) -> Identity:
        """The identity the connection authenticated as."""
        ...

    def is_subscribed(self, topic_filter: str) -> bool:
        """Whether the connection holds exactly this subscription filter."""
        ...

    async def publish(self, topic: str, payload: bytes) -> bool:
        """Send a QoS 0 PUBLISH; ``False`` when the connection is gone."""
        ...

    async def deliver_queued(self) -> None:
        """Send every queued cloud message not yet delivered on this connection."""
        ...

    def close(self, reason: str) -> None:
        """Close the connection without DISCONNECT (its will is published); ``reason`` is logged."""
        ...


@dataclass(slots=True, eq=False)
class MqttSessionState:
    """What survives a reconnect with CleanSession=0: the granted subscriptions.

    Attributes:
        subscriptions: topic filter -> granted QoS.
        persistent: ``False`` for a CleanSession=1 connection (discarded when it closes).
    """

    subscriptions: dict[str, int] = field(default_factory=dict)
    persistent: bool = True


@dataclass(frozen=True, slots=True)
class Admission:
    """The hub's decision on a CONNECT.

    Attributes:
        return_code: the CONNACK return code; 0 accepts.
        reason: why a connection was refused (for the log), ``""`` when accepted.
        identity: the authenticated identity when accepted.
        token_expiry: the SAS token's expiry in Unix seconds, or ``None`` (X.509).
    """

    return_code: int
    reason: str = ""
    identity: Identity | None = None
    token_expiry: int | None = None


@dataclass(slots=True, eq=False)
class CloudMessage:
    """A queued cloud-to-device (or module input) message, ready to publish."""

    topic: str
    body: bytes
    expires_at: float
    delivery_count: int = 0
    #: The connection it was last delivered on; a different connection delivers it again.
    delivered_on: object | None = None


@dataclass(frozen=True, slots=True)
class _TelemetryTopicInfo:
    """What a telemetry topic says, decoded once: devices tend to reuse the same topic."""

    device_id: str
    module_id: str | None
    system: Mapping[str, str | None]
    application: Mapping[str, str | None]
    #: The properties' share of the size IoT Hub counts against the 256 KiB limit.
    properties_size: int

    @classmethod
    def parse(cls, topic: str) -> _TelemetryTopicInfo:
        parsed = parse_telemetry_topic(topic)
        system = {name: value for name, value in parsed.properties.items() if name in SYSTEM_PROPERTY_KEYS}
        application = {name: value for name, value in parsed.properties.items() if name not in SYSTEM_PROPERTY_KEYS}
        return cls(
            parsed.device_id,
            parsed.module_id,
            MappingProxyType(system) if system else _EMPTY,
            MappingProxyType(application) if application else _EMPTY,
            _message_wire_size(b"", parsed.properties),
        )


@dataclass(slots=True, eq=False)
class _Twin:
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported_version: int = 1

    def document(self) -> dict[str, Any]:
        return {
            "desired": {**self.desired, "$version": self.desired_version},
            "reported": {**self.reported, "$version": self.reported_version},
        }


@dataclass(slots=True, eq=False)
class _PendingMethod:
    key: IdentityKey
    done: anyio.Event
    result: MethodResult | None = None


class _Signal:
    """A broadcast wake-up: every current waiter resumes at the next :meth:`notify`."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


# --- the hub ----------------------------------------------------------------------------------------


class Hub:
    """State and service-side API of an emulated IoT hub (no network; see :class:`Emulator`).

    Example:
        >>> hub = Hub(hostname="localhost")
        >>> device = hub.add_device("dev1")
        >>> device.connection_string.startswith("HostName=localhost;DeviceId=dev1;SharedAccessKey=")
        True
        >>> hub.twin("dev1")
        {'desired': {'$version': 1}, 'reported': {'$version': 1}}

    Args:
        hostname: the host name devices put in their username and SAS scope.
        telemetry_limit: how many telemetry messages to keep; older ones are dropped first.
        certificate_authority: the CA that issues ``"x509_ca"`` certificates; generated on first
            use when ``None``.
    """

    def __init__(
        self,
        *,
        hostname: str = "localhost",
        telemetry_limit: int = 100_000,
        certificate_authority: CertificateAuthority | None = None,
    ) -> None:
        if not isinstance(hostname, str) or not hostname or "/" in hostname or not hostname.isascii():
            raise ValueError(f"hostname must be a non-empty ASCII host name, got {hostname!r}")
        if isinstance(telemetry_limit, bool) or not isinstance(telemetry_limit, int) or telemetry_limit < 1:
            raise ValueError(f"telemetry_limit must be a positive int, got {telemetry_limit!r}")
        self._hostname = hostname
        self._certificate_authority = certificate_authority
        self._ca_certificate: x509.Certificate | None = None
        self._identities: dict[IdentityKey, Identity] = {}
        self._twins: dict[IdentityKey, _Twin] = {}
        self._queues: dict[IdentityKey, deque[CloudMessage]] = {}
        self._mqtt_sessions: dict[IdentityKey, MqttSessionState] = {}
        self._connections: dict[IdentityKey, Connection] = {}
        self._connections_changed = _Signal()
        self._pending_methods: dict[str, _PendingMethod] = {}
        self._request_ids = itertools.count(1)
        self._telemetry: deque[TelemetryRecord] = deque(maxlen=telemetry_limit)
        self._telemetry_topics: dict[str, _TelemetryTopicInfo] = {}
        # Running count of messages ever stored: streams keep their place by it across evictions.
        self._telemetry_total = 0
        self._telemetry_cleared_at = 0
        self._telemetry_added = _Signal()
        self._refused_connects = 0
        self._refuse_return_code = CONNACK_SERVER_UNAVAILABLE
        self._failed_twin_operations = 0
        self._twin_failure_status = 429
        self._ignored_twin_requests = 0
        self._dropping_twin_requests = 0
        self._puback_delay = 0.0

    # --- registry ------------------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        """The hub's host name (``HostName`` in connection strings)."""
        return self._hostname

    @property
    def certificate_authority(self) -> CertificateAuthority:
        """The CA that issues certificates for ``"x509_ca"`` identities."""
        if self._certificate_authority is None:
            self._certificate_authority = CertificateAuthority.generate()
        return self._certificate_authority

    def add_device(
        self,
        device_id: str,
        *,
        authentication: Authentication = "sas",
        primary_key: str | None = None,
        secondary_key: str | None = None,
        certificate_pem: bytes | None = None,
    ) -> DeviceIdentity:
        """Register a device.

        Example:
            >>> hub = Hub()
            >>> hub.add_device("dev1").primary_key is not None
            True
            >>> hub.add_device("dev2", authentication="x509").connection_string.endswith(";x509=true")
            True

        Args:
            device_id: the device id (IoT Hub identifier rules).
            authentication: ``"sas"`` (keys generated unless given), ``"x509"`` (a self-signed
                certificate is generated unless ``certificate_pem`` is given; its thumbprint is
                registered) or ``"x509_ca"`` (the emulator's CA issues a certificate with CN = device id).
            primary_key: a base64 primary key to use instead of a random one (``"sas"`` only).
            secondary_key: a base64 secondary key to use instead of a random one (``"sas"`` only).
            certificate_pem: an existing self-signed certificate to register (``"x509"`` only).

        Returns:
            The new identity.

        Raises:
            ValueError: the id is invalid or already registered, or the options do not fit
                ``authentication``.
        """
        validate_identity(device_id, "device_id")
        return self._create_identity(
            DeviceIdentity, device_id, None, authentication, primary_key, secondary_key, certificate_pem
        )

    def add_module(
        self,
        device_id: str,
        module_id: str,
        *,
        authentication: Authentication = "sas",
        primary_key: str | None = None,
        secondary_key: str | None = None,
        certificate_pem: bytes | None = None,
    ) -> ModuleIdentity:
        """Register a module of an already registered device.

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.add_module("dev1", "mod1").module_id
            'mod1'

        Args:
            device_id: the device the module belongs to.
            module_id: the module id.
            authentication: as for :meth:`add_device`; an ``"x509_ca"`` module certificate has
                CN = ``{device_id}/{module_id}``.
            primary_key: a base64 primary key to use instead of a random one.
            secondary_key: a base64 secondary key to use instead of a random one.
            certificate_pem: an existing self-signed certificate to register (``"x509"`` only).

        Returns:
            The new identity.

        Raises:
            ValueError: the device is not registered, the module id is invalid or taken, or the
                options do not fit ``authentication``.
        """
        self._lookup(device_id, None, "device_id")
        validate_identity(module_id, "module_id")
        return self._create_identity(
            ModuleIdentity, device_id, module_id, authentication, primary_key, secondary_key, certificate_pem
        )

    def _create_identity(
        self,
        kind: type[_IdentityT],
        device_id: str,
        module_id: str | None,
        authentication: Authentication,
        primary_key: str | None,
        secondary_key: str | None,
        certificate_pem: bytes | None,
    ) -> _IdentityT:
        key = (device_id, module_id)
        label = device_id if module_id is None else f"{device_id}/{module_id}"
        if key in self._identities:
            argument = "device_id" if module_id is None else "module_id"
            raise ValueError(f"{argument}: {label!r} is already registered")
        if authentication not in ("sas", "x509", "x509_ca"):
            raise ValueError(f"authentication must be 'sas', 'x509' or 'x509_ca', got {authentication!r}")
        if authentication != "sas" and (primary_key is not None or secondary_key is not None):
            raise ValueError("primary_key/secondary_key are only for authentication='sas'")
        if authentication != "x509" and certificate_pem is not None:
            raise ValueError("certificate_pem is only for authentication='x509'")
        identity: _IdentityT
        if authentication == "sas":
            for argument, value in (("primary_key", primary_key), ("secondary_key", secondary_key)):
                if value is not None:
                    _check_key(value, argument)
            identity = kind(
                hostname=self._hostname,
                device_id=device_id,
                module_id=module_id,
                authentication="sas",
                primary_key=primary_key or _new_key(),
                secondary_key=secondary_key or _new_key(),
            )
        else:
            private_key_pem: bytes | None = None
            if authentication == "x509_ca":
                certificate_pem, private_key_pem = self.certificate_authority.issue_client_certificate(label)
            elif certificate_pem is None:
                certificate_pem, private_key_pem = generate_self_signed_certificate(label)
            identity = kind(
                hostname=self._hostname,
                device_id=device_id,
                module_id=module_id,
                authentication=authentication,
                certificate_pem=certificate_pem,
                private_key_pem=private_key_pem,
                thumbprints=frozenset(certificate_thumbprints(certificate_pem)),
            )
            if authentication == "x509":
                self._trust_certificate(certificate_pem)
        self._identities[key] = identity
        self._twins[key] = _Twin()
        self._queues[key] = deque()
        return identity

    def _trust_certificate(self, certificate_pem: bytes) -> None:
        """Hook: a self-signed client certificate was registered (the emulator trusts it for TLS)."""

    def identity(self, device_id: str, module_id: str | None = None) -> Identity:
        """Return a registered device or module.

        Raises:
            ValueError: no such identity.
        """
        return self._lookup(device_id, module_id, "device_id" if module_id is None else "module_id")

    def identities(self) -> list[Identity]:
        """Every registered device and module, in registration order."""
        return list(self._identities.values())

    def set_device_status(self, device_id: str, *, enabled: bool) -> None:
        """Enable or disable a device; disabling closes its connections and those of its modules.

        A disabled device (and its modules) is refused with CONNACK 3.

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.set_device_status("dev1", enabled=False)
            >>> hub.identity("dev1").enabled
            False

        Raises:
            ValueError: the device is not registered.
        """
        identity = self._lookup(device_id, None, "device_id")
        identity._enabled = bool(enabled)
        if enabled:
            return
        for key, connection in list(self._connections.items()):
            if key[0] == device_id:
                connection.close(f"device {device_id!r} was disabled")

    def _lookup(self, device_id: str, module_id: str | None, argument: str) -> Identity:
        identity = self._identities.get((device_id, module_id))
        if identity is None:
            label = device_id if module_id is None else f"{device_id}/{module_id}"
            raise ValueError(f"{argument}: {label!r} is not registered")
        return identity

    # --- connections -------------------------------------------------------------------------

    def admit(self, connect: Connect, client_certificate_der: bytes | None, *, now: float) -> Admission:
        """Decide on a CONNECT as IoT Hub does (used by the session layer).

        Checks, in order: injected refusals, the username (shape and host name), the client id
        against the username, that the identity exists and is enabled, then its credential — a SAS
        token signed with the primary or secondary key, unexpired and scoped to the identity, or a
        client certificate with a registered thumbprint or issued by the emulator's CA.

        Args:
            connect: the CONNECT packet.
            client_certificate_der: the certificate the client presented during the TLS handshake.
            now: the current time in Unix seconds.

        Returns:
            The decision; on acceptance the identity's ``model_id`` and ``product_info`` are updated.
        """
        if self._refused_connects:
            self._refused_connects -= 1
            return Admission(self._refuse_return_code, "refused by refuse_connects()")
        if connect.username is None:
            return Admission(CONNACK_NOT_AUTHORIZED, "CONNECT has no username")
        try:
            username = parse_username(connect.username)
        except ProtocolError as exc:
            return Admission(CONNACK_NOT_AUTHORIZED, str(exc))
        if username.hostname.lower() != self._hostname.lower():
            return Admission(
                CONNACK_NOT_AUTHORIZED,
                f"username host name {username.hostname!r} is not this hub ({self._hostname!r})",
            )
        expected_client_id = (
            username.device_id if username.module_id is None else f"{username.device_id}/{username.module_id}"
        )
        if connect.client_id != expected_client_id:
            return Admission(
                CONNACK_IDENTIFIER_REJECTED,
                f"client id {connect.client_id!r} does not match username {connect.username!r}",
            )
        identity = self._identities.get((username.device_id, username.module_id))
        if identity is None:
            return Admission(CONNACK_NOT_AUTHORIZED, f"{expected_client_id!r} is not registered")
        device = self._identities[(username.device_id, None)]
        if not device.enabled:
            return Admission(CONNACK_SERVER_UNAVAILABLE, f"device {username.device_id!r} is disabled")
        if identity.authentication == "sas":
            admission = self._admit_sas(identity, connect.password, now)
        else:
            admission = self._admit_certificate(identity, connect.password, client_certificate_der)
        if admission.return_code == 0:
            identity.model_id = username.model_id
            identity.product_info = username.product_info
        return admission

    def _admit_sas(self, identity: Identity, password: bytes | None, now: float) -> Admission:
        if not password:
            return Admission(CONNACK_NOT_AUTHORIZED, f"{identity._label()!r} sent no SAS token")
        try:
            token = password.decode("utf-8")
        except UnicodeDecodeError:
            return Admission(CONNACK_NOT_AUTHORIZED, "the password is not UTF-8")
        resource_uri = device_resource_uri(self._hostname, identity.device_id, identity.module_id)
        failures: list[str] = []
        for name, key in (("primary", identity.primary_key), ("secondary", identity.secondary_key)):
            assert key is not None
            try:
                parsed = verify_sas_token(token, key, resource_uri=resource_uri, now=now)
            except CredentialError as exc:
                failures.append(f"{name} key: {exc}")
            else:
                return Admission(0, identity=identity, token_expiry=parsed.expiry)
        return Admission(CONNACK_NOT_AUTHORIZED, f"SAS token refused for {identity._label()!r}: {'; '.join(failures)}")

    def _admit_certificate(self, identity: Identity, password: bytes | None, der: bytes | None) -> Admission:
        label = identity._label()
        if password:
            return Admission(CONNACK_NOT_AUTHORIZED, f"X.509 identity {label!r} sent a password")
        if der is None:
            return Admission(CONNACK_NOT_AUTHORIZED, f"X.509 identity {label!r} sent no client certificate")
        if identity.authentication == "x509":
            if identity.thumbprints.isdisjoint(certificate_thumbprints(der)):
                return Admission(CONNACK_NOT_AUTHORIZED, f"client certificate thumbprint is not {label!r}'s")
            return Admission(0, identity=identity)
        try:
            certificate = x509.load_der_x509_certificate(der)
            certificate.verify_directly_issued_by(self._ca())
        except (ValueError, TypeError, InvalidSignature):
            return Admission(CONNACK_NOT_AUTHORIZED, f"client certificate of {label!r} is not issued by the hub CA")
        try:
            common_name = certificate_common_name(der)
        except ValueError:
            common_name = ""
        if common_name != label:
            return Admission(CONNACK_NOT_AUTHORIZED, f"client certificate common name {common_name!r} is not {label!r}")
        return Admission(0, identity=identity)

    def _ca(self) -> x509.Certificate:
        if self._ca_certificate is None:
            self._ca_certificate = x509.load_pem_x509_certificate(self.certificate_authority.certificate_pem)
        return self._ca_certificate

    def attach(self, connection: Connection, *, clean_session: bool) -> tuple[MqttSessionState, bool]:
        """Register an accepted connection, replacing (closing) an older one of the same identity.

        Args:
            connection: the accepted connection.
            clean_session: the CONNECT's CleanSession flag.

        Returns:
            ``(session state, session present)``: the subscriptions to use and whether they were
            resumed from an earlier CleanSession=0 connection.
        """
        key = connection.identity.key
        older = self._connections.get(key)
        if older is not None and older is not connection:
            older.close("a new connection of the same identity replaced it")
        self._connections[key] = connection
        self._connections_changed.notify()
        if clean_session:
            self._mqtt_sessions.pop(key, None)
            return MqttSessionState(persistent=False), False
        state = self._mqtt_sessions.get(key)
        if state is not None:
            return state, True
        state = self._mqtt_sessions[key] = MqttSessionState()
        return state, False

    def detach(self, connection: Connection) -> None:
        """Forget a closed connection (a no-op when a newer one already replaced it)."""
        key = connection.identity.key
        if self._connections.get(key) is connection:
            del self._connections[key]
            self._connections_changed.notify()

    def connection(self, device_id: str, module_id: str | None = None) -> Connection | None:
        """The live connection of an identity, or ``None``."""
        return self._connections.get((device_id, module_id))

    def is_connected(self, device_id: str, module_id: str | None = None) -> bool:
        """Whether the device or module has an accepted connection right now.

        Example:
            >>> Hub().is_connected("dev1")
            False
        """
        return (device_id, module_id) in self._connections

    async def wait_connected(
        self,
        device_id: str,
        module_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> None:
        """Wait until the device or module is connected.

        Example:
            >>> await hub.wait_connected("dev1", timeout=5)  # doctest: +SKIP

        Raises:
            TimeoutError: not connected within ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while (device_id, module_id) not in self._connections:
                await self._connections_changed.wait()

    async def wait_disconnected(
        self,
        device_id: str,
        module_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> None:
        """Wait until the device or module has no connection.

        Raises:
            TimeoutError: still connected after ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while (device_id, module_id) in self._connections:
                await self._connections_changed.wait()

    async def wait_subscribed(
        self,
        device_id: str,
        topic_filter: str,
        module_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> None:
        """Wait until the identity's live connection holds the subscription ``topic_filter``.

        Useful before :meth:`update_desired` or :meth:`invoke_method`, which reach only a subscribed
        connection.

        Example:
            >>> await hub.wait_subscribed("dev1", "$iothub/methods/POST/#", timeout=5)  # doctest: +SKIP

        Raises:
            TimeoutError: no connection held the subscription within ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while True:
                connection = self._connections.get((device_id, module_id))
                if connection is not None and connection.is_subscribed(topic_filter):
                    return
                await self._connections_changed.wait()

    def subscriptions_changed(self) -> None:
        """Wake :meth:`wait_subscribed` callers (a connection subscribed or unsubscribed; hub role)."""
        self._connections_changed.notify()

    def drop_connection(self, device_id: str, module_id: str | None = None) -> bool:
        """Close an identity's connection abruptly, without DISCONNECT (its will is published).

        Example:
            >>> hub.drop_connection("dev1")  # doctest: +SKIP
            True

        Returns:
            Whether there was a connection to drop.
        """
        connection = self._connections.get((device_id, module_id))
        if connection is None:
            return False
        connection.close("dropped by drop_connection()")
        return True

    def _close_all(self, reason: str) -> None:
        for connection in list(self._connections.values()):
            connection.close(reason)

    # --- fault injection ---------------------------------------------------------------------

    def refuse_connects(self, count: int, return_code: int = CONNACK_SERVER_UNAVAILABLE) -> None:
        """Answer the next ``count`` CONNECTs with CONNACK ``return_code`` (0 cancels).

        Example:
            >>> Hub().refuse_connects(2, return_code=3)
        """
        _check_count(count, "count")
        if isinstance(return_code, bool) or not isinstance(return_code, int) or not 1 <= return_code <= 5:
            raise ValueError(f"return_code must be a refusing CONNACK code 1..5, got {return_code!r}")
        self._refused_connects = count
        self._refuse_return_code = return_code

    def fail_twin_operations(self, count: int, status: int = 429) -> None:
        """Answer the next ``count`` twin GET / reported PATCH requests with ``status`` (0 cancels).

        The twin is left unchanged by a failed request.

        Example:
            >>> Hub().fail_twin_operations(1, status=429)
        """
        _check_count(count, "count")
        if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 599:
            raise ValueError(f"status must be an error status 300..599, got {status!r}")
        self._failed_twin_operations = count
        self._twin_failure_status = status

    def ignore_twin_requests(self, count: int) -> None:
        """Leave the next ``count`` twin GET / reported PATCH requests unanswered (0 cancels).

        The requests are acknowledged (PUBACK) but have no effect, as if the hub lost them.

        Example:
            >>> Hub().ignore_twin_requests(1)
        """
        _check_count(count, "count")
        self._ignored_twin_requests = count

    def drop_on_twin_requests(self, count: int) -> None:
        """Close the connection instead of answering each of the next ``count`` twin requests (0 cancels).

        The request has no effect and is not acknowledged; the device sees its connection drop with
        the request in flight.

        Example:
            >>> Hub().drop_on_twin_requests(1)
        """
        _check_count(count, "count")
        self._dropping_twin_requests = count

    def delay_pubacks(self, seconds: float) -> None:
        """Hold back every PUBACK by ``seconds`` (the hub's traffic shaping); 0 stops.

        Example:
            >>> Hub().delay_pubacks(0.5)
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._puback_delay = float(seconds)

    @property
    def puback_delay(self) -> float:
        """The current PUBACK delay in seconds (see :meth:`delay_pubacks`)."""
        return self._puback_delay

    # --- telemetry ---------------------------------------------------------------------------

    def store_telemetry(
        self,
        identity: Identity,
        topic: str,
        body: bytes,
        *,
        retain: bool,
        enqueued_time: datetime.datetime,
        will: bool = False,
    ) -> None:
        """Accept one device-to-cloud message from a connection (hub role).

        Call :meth:`telemetry_stored` once after a batch of these to wake waiters.

        Raises:
            CloseConnection: the topic belongs to another identity or the message is over 256 KiB.
            ProtocolError: the topic or its property bag is malformed.
        """
        info = self._telemetry_topics.get(topic)
        if info is None:
            info = _TelemetryTopicInfo.parse(topic)
            if len(self._telemetry_topics) >= _TOPIC_CACHE_SIZE:
                self._telemetry_topics.clear()
            self._telemetry_topics[topic] = info
        if info.device_id != identity.device_id or info.module_id != identity.module_id:
            raise CloseConnection(f"publish to another identity's telemetry topic {topic!r}")
        size = len(body) + info.properties_size
        if size > MAX_TELEMETRY_BYTES:
            raise CloseConnection(f"telemetry of {size} bytes exceeds {MAX_TELEMETRY_BYTES} bytes")
        system = info.system
        application = info.application
        if retain or will:
            extra = {"mqtt-retain": "true"} if retain else {}
            if will:
                extra["iothub-MessageType"] = "Will"
            application = MappingProxyType({**application, **extra})
        self._telemetry.append(
            TelemetryRecord(identity.device_id, identity.module_id, body, application, system, enqueued_time)
        )
        self._telemetry_total += 1

    def telemetry_stored(self) -> None:
        """Wake everything waiting for telemetry (after one or more :meth:`store_telemetry`)."""
        self._telemetry_added.notify()

    def telemetry(self, device_id: str | None = None, module_id: str | None = None) -> list[TelemetryRecord]:
        """The telemetry received so far (at most ``telemetry_limit`` messages, oldest first).

        Example:
            >>> [record.body for record in hub.telemetry("dev1")]  # doctest: +SKIP
            [b'hello']

        Args:
            device_id: only messages of this device (and its modules, unless ``module_id`` is given).
            module_id: only messages of this module.
        """
        return [record for record in self._telemetry if _matches(record, device_id, module_id)]

    def clear_telemetry(self) -> None:
        """Forget all telemetry received so far."""
        self._telemetry.clear()
        self._telemetry_cleared_at = self._telemetry_total

    async def wait_for_telemetry(
        self,
        count: int = 1,
        device_id: str | None = None,
        module_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> list[TelemetryRecord]:
        """Wait until at least ``count`` matching messages have been received, and return them all.

        Example:
            >>> records = await hub.wait_for_telemetry(3, device_id="dev1", timeout=5)  # doctest: +SKIP

        Args:
            count: how many matching messages to wait for.
            device_id: as for :meth:`telemetry`.
            module_id: as for :meth:`telemetry`.
            timeout: seconds to wait.

        Returns:
            Every matching message received so far (at least ``count``), oldest first.

        Raises:
            TimeoutError: fewer than ``count`` matching messages arrived within ``timeout``.
        """
        _check_count(count, "count")
        with anyio.fail_after(timeout):
            while True:
                records = self.telemetry(device_id, module_id)
                if len(records) >= count:
                    return records
                await self._telemetry_added.wait()

    async def telemetry_stream(
        self, device_id: str | None = None, module_id: str | None = None
    ) -> AsyncGenerator[TelemetryRecord, None]:
        """Yield telemetry as it arrives, starting with the next message received.

        Example:
            >>> async for record in hub.telemetry_stream("dev1"):  # doctest: +SKIP
            ...     print(record.body)

        If the consumer falls more than ``telemetry_limit`` messages behind, the messages it missed
        are skipped and a warning is logged.

        Args:
            device_id: as for :meth:`telemetry`.
            module_id: as for :meth:`telemetry`.
        """
        position = self._telemetry_total
        while True:
            while position < self._telemetry_total:
                first = self._telemetry_total - len(self._telemetry)
                if position < first:
                    missed = first - max(position, self._telemetry_cleared_at)
                    if missed > 0:
                        logger.warning("telemetry_stream fell behind; %d messages were dropped unseen", missed)
                    position = first
                    continue
                record = self._telemetry[position - first]
                position += 1
                if _matches(record, device_id, module_id):
                    yield record
            await self._telemetry_added.wait()

    # --- twins -------------------------------------------------------------------------------

    def twin(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """A deep copy of the identity's twin properties.

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.twin("dev1")
            {'desired': {'$version': 1}, 'reported': {'$version': 1}}

        Returns:
            ``{"desired": {..., "$version": N}, "reported": {..., "$version": M}}``.

        Raises:
            ValueError: no such identity.
        """
        self._lookup(device_id, module_id, "device_id" if module_id is None else "module_id")
        return copy.deepcopy(self._twins[(device_id, module_id)].document())

    async def update_desired(self, device_id: str, patch: Mapping[str, Any], *, module_id: str | None = None) -> int:
        """Apply a desired-properties merge patch and notify the identity if it listens.

        The patch (with ``"$version"`` added) is published on
        ``$iothub/twin/PATCH/properties/desired/?$version=N`` when the identity is connected and
        subscribed to desired-property notifications.

        Example:
            >>> version = await hub.update_desired("dev1", {"interval": 5})  # doctest: +SKIP

        Args:
            device_id: the device.
            patch: a JSON merge patch (``None`` deletes a key).
            module_id: the module, for a module twin.

        Returns:
            The new desired ``$version``.

        Raises:
            ValueError: no such identity, or the patch breaks the twin rules (depth, key names,
                sizes); the twin is unchanged then.
        """
        self._lookup(device_id, module_id, "device_id" if module_id is None else "module_id")
        if not isinstance(patch, Mapping):
            raise TypeError(f"patch must be a mapping, not {type(patch).__name__}")
        validate_patch(patch, argument="patch")
        twin = self._twins[(device_id, module_id)]
        merged = merge_patch(twin.desired, patch)
        validate_section_size(merged, argument="patch")
        twin.desired = merged
        twin.desired_version += 1
        version = twin.desired_version
        connection = self._connections.get((device_id, module_id))
        if connection is not None and connection.is_subscribed(TWIN_DESIRED_SUBSCRIPTION):
            await connection.publish(twin_desired_topic(version), _json_bytes({**patch, "$version": version}))
        return version

    def handle_twin_request(
        self, identity: Identity, request: TwinRequestTopic, body: bytes
    ) -> tuple[int, bytes, int | None] | None:
        """Serve a twin GET or reported-properties PATCH from a device (hub role).

        Returns:
            ``(status, response body, new reported version or None)``, or ``None`` when the request
            is to go unanswered (:meth:`ignore_twin_requests`).

        Raises:
            CloseConnection: :meth:`drop_on_twin_requests` asks for the connection to be dropped.
        """
        if self._dropping_twin_requests:
            self._dropping_twin_requests -= 1
            raise CloseConnection(f"dropped on twin request {request.request_id!r} by drop_on_twin_requests()")
        if self._ignored_twin_requests:
            self._ignored_twin_requests -= 1
            logger.info("%s: twin request %r ignored by ignore_twin_requests()", identity._label(), request.request_id)
            return None
        if self._failed_twin_operations:
            self._failed_twin_operations -= 1
            return self._twin_failure_status, b"", None
        twin = self._twins[identity.key]
        if request.operation == "GET":
            return 200, _json_bytes(twin.document()), None
        try:
            patch = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            logger.info("%s: reported PATCH body is not JSON", identity._label())
            return 400, b"", None
        if not isinstance(patch, dict):
            logger.info("%s: reported PATCH body is not a JSON object", identity._label())
            return 400, b"", None
        try:
            validate_patch(patch, argument="reported")
            merged = merge_patch(twin.reported, patch)
            validate_section_size(merged, argument="reported")
        except ValueError as exc:
            logger.info("%s: reported PATCH refused: %s", identity._label(), exc)
            return 400, b"", None
        twin.reported = merged
        twin.reported_version += 1
        return 204, b"", twin.reported_version

    # --- direct methods ----------------------------------------------------------------------

    async def invoke_method(
        self,
        device_id: str,
        method_name: str,
        payload: Any = None,
        *,
        module_id: str | None = None,
        timeout: float = 30,  # noqa: ASYNC109 - the service-side method timeout, as IoT Hub has it
    ) -> MethodResult:
        """Call a direct method on a connected device or module and wait for its answer.

        Example:
            >>> result = await hub.invoke_method("dev1", "reboot", {"delay": 1}, timeout=5)  # doctest: +SKIP
            >>> result.status, result.payload  # doctest: +SKIP
            (200, {'ok': True})

        Args:
            device_id: the device.
            method_name: the method (``component*command`` for a Plug and Play component command).
            payload: a JSON-serialisable request body (``None`` is sent as ``null``).
            module_id: the module, to call a module method.
            timeout: seconds to wait for the answer.

        Returns:
            The device's status and payload; status 404 when the identity is offline or not
            subscribed to methods, 504 when it did not answer within ``timeout``.

        Raises:
            ValueError: no such identity, an invalid method name, or a payload over 128 KiB.
            TypeError: the payload is not JSON-serialisable.
        """
        key = (device_id, module_id)
        self._lookup(device_id, module_id, "device_id" if module_id is None else "module_id")
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        try:
            body = _json_bytes(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"payload is not JSON-serialisable: {exc}") from None
        if len(body) > MAX_METHOD_PAYLOAD_BYTES:
            raise ValueError(f"payload is {len(body)} bytes of JSON; the limit is {MAX_METHOD_PAYLOAD_BYTES}")
        request_id = str(next(self._request_ids))
        topic = method_request_topic(method_name, request_id)
        connection = self._connections.get(key)
        if connection is None or not connection.is_subscribed(METHODS_SUBSCRIPTION):
            return MethodResult(404, {"errorCode": 404103, "message": "the device is not online"})
        pending = self._pending_methods[request_id] = _PendingMethod(key, anyio.Event())
        try:
            with anyio.move_on_after(timeout):
                if not await connection.publish(topic, body):
                    return MethodResult(404, {"errorCode": 404103, "message": "the device is not online"})
                await pending.done.wait()
        finally:
            del self._pending_methods[request_id]
        if pending.result is None:
            return MethodResult(504, {"errorCode": 504101, "message": "timed out waiting for the device"})
        return pending.result

    def complete_method(self, identity: Identity, request_id: str, status: int, body: bytes) -> None:
        """Deliver a device's method response to the waiting caller (hub role).

        Responses for unknown or finished requests, or from another identity, are ignored.
        """
        pending = self._pending_methods.get(request_id)
        if pending is None or pending.key != identity.key or pending.result is not None:
            logger.debug("%s: method response for unknown $rid %r ignored", identity._label(), request_id)
            return
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                payload = bytes(body)
        pending.result = MethodResult(status, payload)
        pending.done.set()

    # --- cloud-to-device messages and module inputs ------------------------------------------

    async def send_c2d(
        self,
        device_id: str,
        body: bytes | str,
        *,
        properties: Mapping[str, str] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        user_id: str | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        ack: AckMode = "none",
        ttl: float = DEFAULT_C2D_TTL,
    ) -> str:
        """Queue a cloud-to-device message; it is delivered now if the device listens, else later.

        The message is delivered at QoS 1 on ``devices/{id}/messages/devicebound/{bag}`` and stays
        queued until the device acknowledges it (PUBACK) or ``ttl`` runs out.

        Example:
            >>> await hub.send_c2d("dev1", b"hello", properties={"k": "v"})  # doctest: +SKIP

        Args:
            device_id: the device.
            body: the message body (``str`` is sent as UTF-8); at most 64 KiB.
            properties: application properties.
            message_id: ``$.mid``; a UUID when ``None``.
            correlation_id: ``$.cid``.
            user_id: ``$.uid``.
            content_type: ``$.ct``.
            content_encoding: ``$.ce``.
            ack: the feedback the sender asks for (``iothub-ack``).
            ttl: seconds before the message expires undelivered.

        Returns:
            The message id.

        Raises:
            ValueError: no such device, an invalid argument, or a body over 64 KiB.
            ServiceError: status 403, the device's queue already holds 50 messages.
        """
        self._lookup(device_id, None, "device_id")
        data = _body_bytes(body)
        if len(data) > MAX_C2D_BODY_BYTES:
            raise ValueError(f"body is {len(data)} bytes; a cloud-to-device message holds at most {MAX_C2D_BODY_BYTES}")
        if ack not in _ACK_MODES:
            raise ValueError(f"ack must be one of {sorted(_ACK_MODES)}, got {ack!r}")
        message_id = message_id if message_id is not None else str(uuid.uuid4())
        expiry = _check_ttl(ttl)
        system: dict[str, str | None] = {"$.mid": message_id, "$.to": f"/devices/{device_id}/messages/devicebound"}
        for name, value in (
            ("$.cid", correlation_id),
            ("$.uid", user_id),
            ("$.ct", content_type),
            ("$.ce", content_encoding),
        ):
            if value is not None:
                system[name] = value
        system["$.exp"] = _iso_time(_now_utc() + datetime.timedelta(seconds=ttl))
        system["iothub-ack"] = ack
        topic = c2d_topic(device_id, {**system, **_application_properties(properties)})
        await self._enqueue((device_id, None), CloudMessage(topic, data, expiry))
        return message_id

    async def send_to_input(
        self,
        device_id: str,
        module_id: str,
        input_name: str,
        body: bytes | str,
        *,
        properties: Mapping[str, str] | None = None,
        message_id: str | None = None,
        ttl: float = DEFAULT_C2D_TTL,
    ) -> str:
        """Route a message to a module input, as IoT Edge does.

        The message is delivered at QoS 1 on ``devices/{d}/modules/{m}/inputs/{input}/{bag}``;
        queueing, acknowledgement and expiry work as for :meth:`send_c2d`.

        Example:
            >>> await hub.send_to_input("dev1", "mod1", "input1", b"data")  # doctest: +SKIP

        Returns:
            The message id.

        Raises:
            ValueError: no such module or an invalid argument.
            ServiceError: status 403, the module's queue already holds 50 messages.
        """
        self._lookup(device_id, module_id, "module_id")
        data = _body_bytes(body)
        if len(data) > MAX_TELEMETRY_BYTES:
            raise ValueError(f"body is {len(data)} bytes; a routed message holds at most {MAX_TELEMETRY_BYTES}")
        message_id = message_id if message_id is not None else str(uuid.uuid4())
        expiry = _check_ttl(ttl)
        system: dict[str, str | None] = {
            "$.mid": message_id,
            "$.to": f"/devices/{device_id}/modules/{module_id}/inputs/{input_name}",
        }
        topic = input_topic(device_id, module_id, input_name, {**system, **_application_properties(properties)})
        await self._enqueue((device_id, module_id), CloudMessage(topic, data, expiry))
        return message_id

    async def _enqueue(self, key: IdentityKey, message: CloudMessage) -> None:
        queue = self._queues[key]
        self._purge_expired(queue)
        if len(queue) >= MAX_CLOUD_QUEUE:
            label = key[0] if key[1] is None else f"{key[0]}/{key[1]}"
            raise ServiceError(
                f"device queue full: {label!r} already has {MAX_CLOUD_QUEUE} undelivered messages",
                status=403,
            )
        queue.append(message)
        connection = self._connections.get(key)
        if connection is not None:
            await connection.deliver_queued()

    def c2d_queue_length(self, device_id: str, module_id: str | None = None) -> int:
        """How many messages wait for the identity (not yet acknowledged nor expired).

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.c2d_queue_length("dev1")
            0
        """
        self._lookup(device_id, module_id, "device_id" if module_id is None else "module_id")
        queue = self._queues[(device_id, module_id)]
        self._purge_expired(queue)
        return len(queue)

    def undelivered(self, connection: Connection) -> list[CloudMessage]:
        """The queued messages of the connection's identity not yet delivered on it (hub role)."""
        queue = self._queues[connection.identity.key]
        self._purge_expired(queue)
        return [message for message in queue if message.delivered_on is not connection]

    def complete(self, identity: Identity, message: CloudMessage) -> None:
        """Remove an acknowledged message from the identity's queue (hub role)."""
        queue = self._queues[identity.key]
        # A message that expired while in flight is gone already.
        with contextlib.suppress(ValueError):
            queue.remove(message)

    @staticmethod
    def _purge_expired(queue: deque[CloudMessage]) -> None:
        if not queue:
            return
        now = time.monotonic()
        if any(message.expires_at <= now for message in queue):
            kept = [message for message in queue if message.expires_at > now]
            logger.info("%d cloud-to-device message(s) expired undelivered", len(queue) - len(kept))
            queue.clear()
            queue.extend(kept)


# --- helpers -----------------------------------------------------------------------------------------


def _matches(record: TelemetryRecord, device_id: str | None, module_id: str | None) -> bool:
    if device_id is not None and record.device_id != device_id:
        return False
    return module_id is None or record.module_id == module_id


def _check_count(count: int, argument: str) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{argument} must be an int >= 0, got {count!r}")


def _check_key(key: str, argument: str) -> None:
    try:
        decoded = base64.b64decode(key, validate=True)
    except (ValueError, TypeError):
        raise ValueError(f"{argument} is not valid base64") from None
    if not decoded:
        raise ValueError(f"{argument} is empty")


def _check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return time.monotonic() + ttl


def _body_bytes(body: bytes | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"body must be bytes or str, not {type(body).__name__}")


def _application_properties(properties: Mapping[str, str] | None) -> dict[str, str | None]:
    if properties is None:
        return {}
    result: dict[str, str | None] = {}
    for name, value in properties.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"properties must map str to str, got {name!r}: {type(value).__name__}")
        if name in SYSTEM_PROPERTY_KEYS:
            raise ValueError(f"properties[{name!r}] is a system property; use the matching argument")
        if not name.isascii() or not value.isascii():
            raise ValueError(f"properties[{name!r}] must be ASCII")
        result[name] = value
    return result
