"""The hub's parts wired together, and the calls a live device connection makes into them (hub role).

:class:`HubCore` builds one of each part -- registry, faults, connection table, telemetry store,
twins, direct methods, cloud queues -- and gives a device connection
(:class:`~aioiothub.emulator.mqtt.device.DeviceHandler`) the few calls it needs: admit a
CONNECT, attach and detach, hand over telemetry, twin requests, method answers and PUBACKs.
:class:`~aioiothub.emulator.hub.facade.Hub` holds one as ``hub.core`` and puts the service-side API
in front of it. A :class:`~aioiothub.emulator.hub.observer.TrafficObserver` set as :attr:`HubCore.traffic`
hears of each of these calls (``--log-traffic``); without one nothing is reported.

Which data sources reach the built-in endpoint's :class:`~aioiothub.emulator.hub.event_log.EventLog`
is decided once, here: device messages go to the log or, when their route is off, to a sink that
drops them, so the telemetry path makes the same single call either way; twin-change and lifecycle
notifications (:mod:`.notifications`) are built only when routed.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncGenerator, Callable, Collection
from typing import Protocol

from aioiothub.emulator.certs import CertificateAuthority
from aioiothub.emulator.hub.admission import Admission, admit
from aioiothub.emulator.hub.connections import Connection, ConnectionTable, PersistentSubscriptions
from aioiothub.emulator.hub.dps import ProvisioningService
from aioiothub.emulator.hub.event_log import EventLog
from aioiothub.emulator.hub.faults import Faults
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.methods import DirectMethods
from aioiothub.emulator.hub.notifications import DEFAULT_EVENT_SOURCES, Notifications, check_event_sources
from aioiothub.emulator.hub.queues import CloudMessage, CloudQueues
from aioiothub.emulator.hub.registry import Registry
from aioiothub.emulator.hub.service_bound import FileNotification, ServiceBoundQueue
from aioiothub.emulator.hub.telemetry import TelemetryRecord, TelemetryStore
from aioiothub.emulator.hub.traffic_observer import TrafficObserver
from aioiothub.emulator.hub.twins import TwinAnswer, Twins
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.topics import TwinRequestTopic

__all__ = ["HubCore"]


class _TelemetryLog(Protocol):
    def append(self, record: TelemetryRecord) -> object: ...


class _Unrouted:
    """Where device messages go when ``DeviceMessages`` is not routed to the built-in endpoint."""

    __slots__ = ()

    def append(self, record: TelemetryRecord) -> None:
        pass


class HubCore:
    """The parts of one emulated hub and the calls its device connections make (see the module docstring).

    Args:
        hostname: the hub's host name.
        telemetry_limit: how many telemetry messages to keep.
        certificate_authority: the CA that issues ``"x509_ca"`` certificates.
        trust_certificate: called with a self-signed client certificate when one is registered (the
            running emulator adds it to what its TLS listeners trust).
        event_sources: the route data sources sent to the built-in endpoint (see
            :func:`~aioiothub.emulator.hub.notifications.check_event_sources`).
    """

    def __init__(
        self,
        *,
        hostname: str = "localhost",
        telemetry_limit: int = 100_000,
        certificate_authority: CertificateAuthority | None = None,
        trust_certificate: Callable[[bytes], None] = lambda pem: None,
        event_sources: Collection[str] = DEFAULT_EVENT_SOURCES,
    ) -> None:
        if not isinstance(hostname, str) or not hostname or "/" in hostname or not hostname.isascii():
            raise ValueError(f"hostname must be a non-empty ASCII host name, got {hostname!r}")
        self.event_sources = check_event_sources(event_sources)
        """The route data sources sent to the built-in endpoint."""
        self.telemetry = TelemetryStore(telemetry_limit)
        self.events = EventLog()
        """The built-in Event Hubs-compatible endpoint's partitions (read over AMQP)."""
        self.file_notifications: ServiceBoundQueue[FileNotification] = ServiceBoundQueue()
        """Finished uploads not yet taken by a back end (``/messages/serviceBound/filenotifications``)."""
        self._telemetry_log: _TelemetryLog = self.events if "DeviceMessages" in self.event_sources else _Unrouted()
        self.notifications = Notifications(self.events, hostname=hostname, sources=self.event_sources)
        """Twin-change and lifecycle notifications, for the kinds routed to the built-in endpoint."""
        self.registry = Registry(
            hostname=hostname,
            certificate_authority=certificate_authority,
            on_self_signed_certificate=trust_certificate,
        )
        self.faults = Faults()
        self.connections = ConnectionTable()
        self.twins = Twins(self.connections, self.faults)
        if self.notifications.twin_changes:
            self.twins.changes = self.notifications
        self.methods = DirectMethods(self.connections)
        self.queues = CloudQueues(self.connections)
        self.dps = ProvisioningService(
            registry=self.registry, twins=self.twins, provision=self.provision, trust_certificate=trust_certificate
        )
        self.traffic: TrafficObserver | None = None
        """Told of every call below when set (``--log-traffic``)."""

    def report_service_call(self, device_id: str, module_id: str | None, what: str) -> None:
        """Tell the traffic observer, if any, what the service side just did to an identity."""
        if self.traffic is not None:
            self.traffic.service_call(device_id if module_id is None else f"{device_id}/{module_id}", what)

    def provision(self, identity: Identity) -> None:
        """Give a newly registered identity its place in every part that keeps state per identity."""
        self.twins.add(identity.key)
        self.queues.add(identity.key, identity.generation_id)
        if self.notifications.lifecycle:
            self.notifications.identity_created(identity.key, self.twins.state(identity.key))

    def set_device_status(self, device_id: str, *, enabled: bool) -> None:
        """Enable or disable a device; disabling closes its connections and those of its modules."""
        self.registry.set_device_status(device_id, enabled=enabled)
        if not enabled:
            self.connections.drop_device(device_id, f"device {device_id!r} was disabled")

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
        admission = (
            Admission(refusal, "refused by refuse_connects()")
            if refusal is not None
            else admit(self.registry, connect, client_certificate_der, now=now)
        )
        if self.traffic is not None and admission.return_code:
            self.traffic.connect_refused(connect, admission)
        return admission

    def attach(self, connection: Connection, *, clean_session: bool) -> tuple[PersistentSubscriptions, bool]:
        """Register an accepted connection, replacing (closing) an older one of the same identity (hub role).

        Args:
            connection: the accepted connection.
            clean_session: the CONNECT's CleanSession flag.

        Returns:
            ``(subscriptions, session present)``: the subscriptions to use and whether they were
            resumed from an earlier CleanSession=0 connection.
        """
        subscriptions, resumed = self.connections.attach(connection, clean_session=clean_session)
        if self.traffic is not None:
            self.traffic.connected(connection, resumed=resumed)
        return subscriptions, resumed

    def detach(self, connection: Connection) -> None:
        """Forget a closed connection (a no-op when the hub already did; hub role)."""
        if self.traffic is not None and self.connections.get(connection.identity.key) is connection:
            self.traffic.disconnected(connection)
        self.connections.detach(connection)

    def subscriptions_changed(self) -> None:
        """Wake :meth:`wait_subscribed` callers (a connection subscribed or unsubscribed; hub role)."""
        self.connections.subscriptions_changed()

    def close_all(self, reason: str) -> None:
        """Close every connection (the emulator is shutting down)."""
        self.connections.drop_all(reason)

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
        record = self.telemetry.store(identity, topic, body, retain=retain, enqueued_time=enqueued_time, will=will)
        self._telemetry_log.append(record)
        identity.mark_active(enqueued_time)
        if self.traffic is not None:
            self.traffic.device_message(identity, body, will=will)

    def telemetry_stored(self) -> None:
        """Wake everything waiting for telemetry (after one or more :meth:`store_telemetry`)."""
        self.telemetry.stored()
        self.events.appended()

    def follow_telemetry(
        self, device_id: str | None, module_id: str | None, *, idle: float
    ) -> AsyncGenerator[TelemetryRecord | None, None]:
        """Telemetry as it arrives (like ``telemetry_stream``), and ``None`` after ``idle`` quiet seconds.

        For streams that must write something now and then to keep a connection alive.
        """
        return self.telemetry.follow(device_id, module_id, idle=idle)

    def handle_twin_request(self, identity: Identity, request: TwinRequestTopic, body: bytes) -> TwinAnswer | None:
        """Serve a twin GET or reported-properties PATCH from a device (hub role).

        Returns:
            ``(status, response body, new reported version or None)``, or ``None`` when the request
            is to go unanswered (:meth:`ignore_twin_requests`).

        Raises:
            RuleViolation: :meth:`drop_on_twin_requests` asks for the connection to be dropped.
        """
        identity.mark_active()
        answer = self.twins.serve(identity, request, body)
        if self.traffic is not None:
            self.traffic.twin_request(identity, request, body, answer)
        return answer

    def complete_method(self, identity: Identity, request_id: str, status: int, body: bytes) -> None:
        """Deliver a device's method response to the waiting caller (hub role).

        Responses for unknown or finished requests, or from another identity, are ignored.
        """
        identity.mark_active()
        if self.traffic is not None:
            self.traffic.method_answered(identity, request_id, status, body)
        self.methods.complete(identity, request_id, status, body)

    def undelivered(self, connection: Connection) -> list[CloudMessage]:
        """The queued messages of the connection's identity not yet delivered on it (hub role)."""
        return self.queues.undelivered(connection)

    def complete(self, identity: Identity, message: CloudMessage) -> None:
        """Remove an acknowledged message from the identity's queue (hub role)."""
        identity.mark_active()
        if self.traffic is not None:
            self.traffic.acknowledged(identity, message)
        self.queues.complete(identity, message)
