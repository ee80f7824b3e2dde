"""The :class:`Hub` facade: the service-side API. Each method checks that the identity it names is
registered and hands the job to the part that owns it (see :mod:`aioiothub.emulator.hub`). The parts
and the calls device connections make are the hub's :class:`~aioiothub.emulator.hub.core.HubCore`,
``hub.core``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from typing import Any

from aioiothub.emulator.certs import CertificateAuthority
from aioiothub.emulator.hub.connections import Connection
from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.dps import ProvisioningService
from aioiothub.emulator.hub.faults import ArmsFault, Faults
from aioiothub.emulator.hub.identity import Authentication, DeviceIdentity, Identity, ModuleIdentity
from aioiothub.emulator.hub.methods import MethodResult
from aioiothub.emulator.hub.notifications import DEFAULT_EVENT_SOURCES
from aioiothub.emulator.hub.queues import DEFAULT_C2D_TTL, AckMode, FeedbackRecord
from aioiothub.emulator.hub.telemetry import TelemetryRecord

__all__ = ["Hub"]


class Hub:
    """State and service-side API of an emulated IoT hub (no network; see :class:`Emulator`).

    Example:
        >>> hub = Hub(hostname="localhost")
        >>> device = hub.add_device("dev1")
        >>> device.connection_string.startswith("HostName=localhost;DeviceId=dev1;SharedAccessKey=")
        True

    Args:
        hostname: the host name devices put in their username and SAS scope.
        telemetry_limit: how many telemetry messages to keep; older ones are dropped first.
        certificate_authority: the CA that issues ``"x509_ca"`` certificates; generated on first use when ``None``.
        event_sources: the route data sources the built-in endpoint receives: ``"DeviceMessages"`` (the
            default), ``"TwinChangeEvents"``, ``"DeviceLifecycleEvents"`` (:mod:`.notifications`).
    """

    def __init__(
        self,
        *,
        hostname: str = "localhost",
        telemetry_limit: int = 100_000,
        certificate_authority: CertificateAuthority | None = None,
        event_sources: Collection[str] = DEFAULT_EVENT_SOURCES,
    ) -> None:
        self.core = HubCore(  # the running emulator's _trust_certificate adds to what its TLS trusts
            hostname=hostname, telemetry_limit=telemetry_limit, certificate_authority=certificate_authority,
            trust_certificate=self._trust_certificate, event_sources=event_sources,
        )
        """The hub's parts, and the calls its device connections make."""
        self.faults: Faults = self.core.faults
        """Fault injection for tests: refuse connects, fail or drop twin requests, delay PUBACKs."""
        self.dps: ProvisioningService = self.core.dps
        """The Device Provisioning Service on the hub's listeners: enrollments and registrations."""

    def _trust_certificate(self, certificate_pem: bytes) -> None:
        """A self-signed client certificate was registered (the running emulator trusts it for TLS)."""

    @property
    def hostname(self) -> str:
        """The hub's host name (``HostName`` in connection strings)."""
        return self.core.registry.hostname

    @property
    def certificate_authority(self) -> CertificateAuthority:
        """The CA that issues certificates for ``"x509_ca"`` identities."""
        return self.core.registry.certificate_authority

    # --- registry ------------------------------------------------------------------------------
    def identity(self, device_id: str, module_id: str | None = None) -> Identity:
        """Return a registered device or module.

        Raises:
            ValueError: no such identity.
        """
        return self.core.registry.lookup(device_id, module_id)

    def identities(self) -> list[Identity]:
        """Every registered device and module, in registration order."""
        return self.core.registry.identities()

    def add_device(
        self,
        device_id: str,
        *,
        authentication: Authentication = "sas",
        primary_key: str | None = None,
        secondary_key: str | None = None,
        certificate_pem: bytes | None = None,
        thumbprints: Sequence[str] | None = None,
    ) -> DeviceIdentity:
        """Register a device and return its identity.

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
            thumbprints: register an ``"x509"`` identity by the SHA-1 or SHA-256 thumbprints of its
                certificate alone (hex), as the service API does.

        Raises:
            ValueError: the id is invalid or already registered, or the options do not fit
                ``authentication``.
        """
        identity = self.core.registry.add_device(
            device_id, authentication, primary_key, secondary_key, certificate_pem, thumbprints=thumbprints
        )
        self.core.provision(identity)
        return identity

    def add_module(
        self,
        device_id: str,
        module_id: str,
        *,
        authentication: Authentication = "sas",
        primary_key: str | None = None,
        secondary_key: str | None = None,
        certificate_pem: bytes | None = None,
        thumbprints: Sequence[str] | None = None,
    ) -> ModuleIdentity:
        """Register a module of an already registered device and return its identity.

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.add_module("dev1", "mod1").module_id
            'mod1'

        Args:
            device_id: the device the module belongs to.
            module_id: the module id.
            authentication: as for :meth:`add_device`, and so are the keys, ``certificate_pem`` and
                ``thumbprints``; an ``"x509_ca"`` module certificate has CN = ``{device_id}/{module_id}``.

        Raises:
            ValueError: the device is not registered, the module id is invalid or taken, or the
                options do not fit ``authentication``.
        """
        identity = self.core.registry.add_module(
            device_id, module_id, authentication, primary_key, secondary_key, certificate_pem, thumbprints=thumbprints
        )
        self.core.provision(identity)
        return identity

    def set_device_status(self, device_id: str, *, enabled: bool) -> None:
        """Enable or disable a device; disabling closes its connections and those of its modules,
        and a disabled device (and its modules) is refused with CONNACK 3.

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.set_device_status("dev1", enabled=False)
            >>> hub.identity("dev1").enabled
            False

        Raises:
            ValueError: the device is not registered.
        """
        self.core.set_device_status(device_id, enabled=enabled)

    # --- connections -------------------------------------------------------------------------
    def connection(self, device_id: str, module_id: str | None = None) -> Connection | None:
        """The live connection of an identity, or ``None``."""
        return self.core.connections.get((device_id, module_id))

    def is_connected(self, device_id: str, module_id: str | None = None) -> bool:
        """Whether the device or module has an accepted connection right now."""
        return self.connection(device_id, module_id) is not None

    async def wait_connected(
        self,
        device_id: str,
        module_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> None:
        """Wait until the device or module is connected.

        Raises:
            TimeoutError: not connected within ``timeout`` seconds.
        """
        await self.core.connections.wait_connected((device_id, module_id), timeout)

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
        await self.core.connections.wait_disconnected((device_id, module_id), timeout)

    async def wait_subscribed(
        self,
        device_id: str,
        topic_filter: str,
        module_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> None:
        """Wait until the identity's live connection holds the subscription ``topic_filter``.

        Call it before :meth:`update_desired` or :meth:`invoke_method`: they reach only subscribed connections.

        Raises:
            TimeoutError: no connection held the subscription within ``timeout`` seconds.
        """
        await self.core.connections.wait_subscribed((device_id, module_id), topic_filter, timeout)

    def is_subscribed(self, device_id: str, topic_filter: str, module_id: str | None = None) -> bool:
        """Whether the identity's live connection holds the subscription ``topic_filter`` right now.

        A CleanSession=0 connection resumes the identity's earlier subscriptions; CleanSession=1 starts with none.
        """
        connection = self.core.connections.get((device_id, module_id))
        return connection is not None and connection.is_subscribed(topic_filter)

    def drop_connection(self, device_id: str, module_id: str | None = None) -> bool:
        """Close an identity's connection abruptly, without DISCONNECT; ``False``: there was none.

        The connection's will is published.
        When this returns the hub no longer routes anything to the connection: :meth:`is_connected`
        is ``False`` and messages, patches and method calls wait for the next one. The socket itself
        closes asynchronously.
        """
        return self.core.connections.drop((device_id, module_id), "dropped by drop_connection()")

    # --- fault injection: the methods of hub.faults, here too -------------------------------
    refuse_connects = ArmsFault(Faults.refuse_connects)
    fail_twin_operations = ArmsFault(Faults.fail_twin_operations)
    ignore_twin_requests = ArmsFault(Faults.ignore_twin_requests)
    ignore_subscribes = ArmsFault(Faults.ignore_subscribes)
    drop_on_twin_requests = ArmsFault(Faults.drop_on_twin_requests)
    delay_pubacks = ArmsFault(Faults.delay_pubacks)

    # --- telemetry ---------------------------------------------------------------------------
    def telemetry(self, device_id: str | None = None, module_id: str | None = None) -> list[TelemetryRecord]:
        """The telemetry received so far (at most ``telemetry_limit`` messages, oldest first).

        Args:
            device_id: only messages of this device (and its modules, unless ``module_id`` is given).
            module_id: only messages of this module.
        """
        return self.core.telemetry.records(device_id, module_id)

    def clear_telemetry(self) -> None:
        """Forget all telemetry received so far."""
        self.core.telemetry.clear()

    async def wait_for_telemetry(
        self,
        count: int = 1,
        device_id: str | None = None,
        module_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> list[TelemetryRecord]:
        """Wait until at least ``count`` matching messages have been received, and return them all.

        ``device_id`` and ``module_id`` filter as for :meth:`telemetry`; the result is every matching
        message received so far (at least ``count``), oldest first.

        Raises:
            TimeoutError: fewer than ``count`` matching messages arrived within ``timeout``.
        """
        return await self.core.telemetry.wait_for(count, device_id, module_id, timeout)

    def telemetry_stream(
        self, device_id: str | None = None, module_id: str | None = None
    ) -> AsyncGenerator[TelemetryRecord, None]:
        """Yield telemetry as it arrives, from the next message on (filtered as :meth:`telemetry` is).

        If the consumer falls more than ``telemetry_limit`` messages behind, the messages it missed
        are skipped and a warning is logged.
        """
        return self.core.telemetry.stream(device_id, module_id)

    # --- twins -------------------------------------------------------------------------------
    def twin(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """A deep copy of the identity's twin properties: ``{"desired": {..., "$version": N}, "reported": {...}}``.

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.twin("dev1")
            {'desired': {'$version': 1}, 'reported': {'$version': 1}}

        Raises:
            ValueError: no such identity.
        """
        return self.core.twins.document(self.core.registry.lookup(device_id, module_id).key)

    async def update_desired(self, device_id: str, patch: Mapping[str, Any], *, module_id: str | None = None) -> int:
        """Apply a desired-properties merge patch, notify the identity if it listens; return the new ``$version``.

        The patch (with ``"$version"`` added) is published on
        ``$iothub/twin/PATCH/properties/desired/?$version=N`` when the identity is connected and
        subscribed to desired-property notifications.

        Args:
            device_id: the device.
            patch: a JSON merge patch (``None`` deletes a key).
            module_id: the module, for a module twin.

        Raises:
            ValueError: no such identity, or the patch breaks the twin rules (depth, key names,
                sizes); the twin is unchanged then.
        """
        version = await self.core.twins.update_desired(self.core.registry.lookup(device_id, module_id), patch)
        self.core.report_service_call(device_id, module_id, f"desired properties updated: $version {version}")
        return version

    def twin_state(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """The whole twin: ``tags``, ``desired``, ``reported``, ``desired_version``, ``reported_version``
        and the twin ``version`` (bumped by every change).

        Raises:
            ValueError: no such identity.
        """
        return self.core.twins.state(self.core.registry.lookup(device_id, module_id).key)

    async def update_twin(
        self,
        device_id: str,
        *,
        module_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        desired: Mapping[str, Any] | None = None,
    ) -> None:
        """Merge-patch the twin's tags and desired properties; the device hears of a desired change.

        Raises:
            ValueError: no such identity, or a patch breaks the twin rules (nothing changes then).
        """
        await self.core.twins.update(self.core.registry.lookup(device_id, module_id), tags=tags, desired=desired)
        self.core.report_service_call(device_id, module_id, "twin patched")

    async def replace_twin(
        self, device_id: str, *, module_id: str | None = None, tags: Mapping[str, Any], desired: Mapping[str, Any]
    ) -> None:
        """Replace the twin's tags and desired properties; the device is sent what changed.

        Raises:
            ValueError: no such identity, or a section breaks the twin rules (nothing changes then).
        """
        await self.core.twins.replace(self.core.registry.lookup(device_id, module_id), tags=tags, desired=desired)
        self.core.report_service_call(device_id, module_id, "twin replaced")

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
            ServiceError: status 400, the device answered with a body that is not JSON.
        """
        self.core.report_service_call(device_id, module_id, f"method {method_name!r} invoked")
        identity = self.core.registry.lookup(device_id, module_id)
        result = await self.core.methods.invoke(identity, method_name, payload, timeout)
        self.core.report_service_call(device_id, module_id, f"method {method_name!r} -> {result.status}")
        return result

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
        """Queue a cloud-to-device message and return its id; it is delivered now if the device listens, else later.

        The message is delivered at QoS 1 on ``devices/{id}/messages/devicebound/{bag}`` and stays
        queued until the device acknowledges it (PUBACK) or ``ttl`` runs out.

        Args:
            device_id: the device.
            body: the message body (``str`` is sent as UTF-8); at most 64 KiB.
            properties: application properties.
            message_id: ``$.mid``; a UUID when ``None``. ``correlation_id`` (``$.cid``), ``user_id``
                (``$.uid``), ``content_type`` (``$.ct``) and ``content_encoding`` (``$.ce``) likewise.
            ack: the feedback the sender asks for (``iothub-ack``).
            ttl: seconds before the message expires undelivered.

        Raises:
            ValueError: no such device, an invalid argument, or a body over 64 KiB.
            ServiceError: status 403, the device's queue already holds 50 messages.
        """
        self.core.registry.lookup(device_id)
        message_id = await self.core.queues.send_c2d(
            device_id, body, properties=properties, message_id=message_id, correlation_id=correlation_id,
            user_id=user_id, content_type=content_type, content_encoding=content_encoding, ack=ack, ttl=ttl,
        )
        what = f"cloud-to-device message {message_id} queued ({len(body)} bytes, ack {ack})"
        self.core.report_service_call(device_id, None, what)
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
        """Route a message to a module input, as IoT Edge does, and return its id.

        The message is delivered at QoS 1 on ``devices/{d}/modules/{m}/inputs/{input}/{bag}``;
        queueing, acknowledgement and expiry work as for :meth:`send_c2d`.

        Raises:
            ValueError: no such module or an invalid argument.
            ServiceError: status 403, the module's queue already holds 50 messages.
        """
        self.core.registry.lookup(device_id, module_id)
        return await self.core.queues.send_to_input(
            device_id, module_id, input_name, body, properties=properties, message_id=message_id, ttl=ttl
        )

    def c2d_queue_length(self, device_id: str, module_id: str | None = None) -> int:
        """How many messages wait for the identity (not yet acknowledged nor expired).

        Example:
            >>> hub = Hub()
            >>> _ = hub.add_device("dev1")
            >>> hub.c2d_queue_length("dev1")
            0
        """
        return self.core.queues.length(self.core.registry.lookup(device_id, module_id).key)

    # --- cloud-to-device feedback --------------------------------------------------------------
    def feedback(self, device_id: str | None = None) -> list[FeedbackRecord]:
        """Feedback on cloud-to-device messages sent with ``ack`` (the latest 1000), oldest first."""
        return self.core.queues.feedback(device_id)

    async def wait_for_feedback(
        self,
        count: int = 1,
        device_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> list[FeedbackRecord]:
        """Wait until at least ``count`` feedback records match, and return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        return await self.core.queues.wait_feedback(count, device_id, timeout)
