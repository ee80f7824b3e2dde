"""The hub's parts wired together, and the calls a live device connection makes into them (hub role).

:class:`HubCore` builds one of each part -- registry, faults, connection table, telemetry store,
twins, direct methods, cloud queues -- and gives a device connection
(:class:`~aioiothub.emulator.mqtt.device.DeviceHandler`) the few calls it needs: admit a
CONNECT, attach and detach, hand over telemetry, twin requests, method answers and PUBACKs.
:class:`~aioiothub.emulator.hub.facade.Hub` adds the service-side API on top.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncGenerator

from aioiothub.emulator.certs import CertificateAuthority
from aioiothub.emulator.hub.admission import Admission, admit
from aioiothub.emulator.hub.connections import Connection, ConnectionTable, PersistentSubscriptions
from aioiothub.emulator.hub.dps import ProvisioningService
from aioiothub.emulator.hub.faults import Faults
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.methods import DirectMethods
from aioiothub.emulator.hub.queues import CloudMessage, CloudQueues
from aioiothub.emulator.hub.registry import Registry
from aioiothub.emulator.hub.telemetry import TelemetryRecord, TelemetryStore
from aioiothub.emulator.hub.twins import TwinAnswer, Twins
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.topics import TwinRequestTopic

__all__ = ["HubCore"]


class HubCore:
    """The parts of one emulated hub and the calls its device connections make (see :class:`Hub`)."""

    def __init__(
        self,
        *,
        hostname: str = "localhost",
        telemetry_limit: int = 100_000,
        certificate_authority: CertificateAuthority | None = None,
    ) -> None:
        if not isinstance(hostname, str) or not hostname or "/" in hostname or not hostname.isascii():
            raise ValueError(f"hostname must be a non-empty ASCII host name, got {hostname!r}")
        self._telemetry = TelemetryStore(telemetry_limit)
        # Bound late, so that a subclass's _trust_certificate (the running emulator's) is the one called.
        self._registry = Registry(
            hostname=hostname,
            certificate_authority=certificate_authority,
            on_self_signed_certificate=lambda pem: self._trust_certificate(pem),
        )
        self.faults = Faults()
        """Fault injection for tests: refuse connects, fail or drop twin requests, delay PUBACKs."""
        self._connections = ConnectionTable()
        self._twins = Twins(self._connections, self.faults)
        self._methods = DirectMethods(self._connections)
        self._queues = CloudQueues(self._connections)
        self._dps = ProvisioningService(
            registry=self._registry,
            twins=self._twins,
            provision=self._provision,
            trust_certificate=lambda pem: self._trust_certificate(pem),
        )

    @property
    def hostname(self) -> str:
        """The hub's host name (``HostName`` in connection strings)."""
        return self._registry.hostname

    @property
    def certificate_authority(self) -> CertificateAuthority:
        """The CA that issues certificates for ``"x509_ca"`` identities."""
        return self._registry.certificate_authority

    def _trust_certificate(self, certificate_pem: bytes) -> None:
        """Hook: a self-signed client certificate was registered (the emulator trusts it for TLS)."""

    def _provision(self, identity: Identity) -> None:
        """Give a newly registered identity its place in every part that keeps state per identity."""
        self._twins.add(identity.key)
        self._queues.add(identity.key)

    def identity(self, device_id: str, module_id: str | None = None) -> Identity:
        """Return a registered device or module.

        Raises:
            ValueError: no such identity.
        """
        return self._registry.lookup(device_id, module_id)

    def identities(self) -> list[Identity]:
        """Every registered device and module, in registration order."""
        return self._registry.identities()

    @property
    def dps(self) -> ProvisioningService:
        """The Device Provisioning Service on the hub's listeners: enrollments and registrations."""
        return self._dps

    # --- connections (hub role) ------------------------------------------------------------

    def admit(self, connect: Connect, client_certificate_der: bytes | None, *, now: float) -> Admission:
        """Decide on a CONNECT as IoT Hub does (hub role).

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
        refusal = self.faults.take_connect_refusal()
        if refusal is not None:
            return Admission(refusal, "refused by refuse_connects()")
        return admit(self._registry, connect, client_certificate_der, now=now)

    def attach(self, connection: Connection, *, clean_session: bool) -> tuple[PersistentSubscriptions, bool]:
        """Register an accepted connection, replacing (closing) an older one of the same identity (hub role).

        Args:
            connection: the accepted connection.
            clean_session: the CONNECT's CleanSession flag.

        Returns:
            ``(subscriptions, session present)``: the subscriptions to use and whether they were
            resumed from an earlier CleanSession=0 connection.
        """
        return self._connections.attach(connection, clean_session=clean_session)

    def detach(self, connection: Connection) -> None:
        """Forget a closed connection (a no-op when the hub already did; hub role)."""
        self._connections.detach(connection)

    def connection(self, device_id: str, module_id: str | None = None) -> Connection | None:
        """The live connection of an identity, or ``None``."""
        return self._connections.get((device_id, module_id))

    def subscriptions_changed(self) -> None:
        """Wake :meth:`wait_subscribed` callers (a connection subscribed or unsubscribed; hub role)."""
        self._connections.subscriptions_changed()

    def _close_all(self, reason: str) -> None:
        self._connections.drop_all(reason)

    # --- what a connection hands over (hub role) -------------------------------------------

    @property
    def puback_delay(self) -> float:
        """The current PUBACK delay in seconds (see :meth:`delay_pubacks`)."""
        return self.faults.puback_delay

    def subscribe_lost(self) -> bool:
        """Whether the SUBSCRIBE just received is to be ignored (see :meth:`ignore_subscribes`)."""
        return self.faults.take_ignored_subscribe()

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
            RuleViolation: the topic belongs to another identity or the message is over 256 KiB.
            ProtocolError: the topic or its property bag is malformed.
        """
        self._telemetry.store(identity, topic, body, retain=retain, enqueued_time=enqueued_time, will=will)
        identity.mark_active(enqueued_time)

    def telemetry_stored(self) -> None:
        """Wake everything waiting for telemetry (after one or more :meth:`store_telemetry`)."""
        self._telemetry.stored()

    def follow_telemetry(
        self, device_id: str | None, module_id: str | None, *, idle: float
    ) -> AsyncGenerator[TelemetryRecord | None, None]:
        """Telemetry as it arrives (like ``telemetry_stream``), and ``None`` after ``idle`` quiet seconds.

        For streams that must write something now and then to keep a connection alive.
        """
        return self._telemetry.follow(device_id, module_id, idle=idle)

    def handle_twin_request(self, identity: Identity, request: TwinRequestTopic, body: bytes) -> TwinAnswer | None:
        """Serve a twin GET or reported-properties PATCH from a device (hub role).

        Returns:
            ``(status, response body, new reported version or None)``, or ``None`` when the request
            is to go unanswered (:meth:`ignore_twin_requests`).

        Raises:
            RuleViolation: :meth:`drop_on_twin_requests` asks for the connection to be dropped.
        """
        identity.mark_active()
        return self._twins.serve(identity, request, body)

    def complete_method(self, identity: Identity, request_id: str, status: int, body: bytes) -> None:
        """Deliver a device's method response to the waiting caller (hub role).

        Responses for unknown or finished requests, or from another identity, are ignored.
        """
        identity.mark_active()
        self._methods.complete(identity, request_id, status, body)

    def undelivered(self, connection: Connection) -> list[CloudMessage]:
        """The queued messages of the connection's identity not yet delivered on it (hub role)."""
        return self._queues.undelivered(connection)

    def complete(self, identity: Identity, message: CloudMessage) -> None:
        """Remove an acknowledged message from the identity's queue (hub role)."""
        identity.mark_active()
        self._queues.complete(identity, message)
