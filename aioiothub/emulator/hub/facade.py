"""The :class:`Hub` facade: the service-side API. Each method checks that the identity it names is
registered and hands the job to the part that owns it (see :mod:`aioiothub.emulator.hub`); the calls
device connections make come from :class:`~aioiothub.emulator.hub.core.HubCore`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.identity import Authentication, DeviceIdentity, ModuleIdentity
from aioiothub.emulator.hub.methods import MethodResult
from aioiothub.emulator.hub.queues import DEFAULT_C2D_TTL, AckMode
from aioiothub.emulator.hub.telemetry import TelemetryRecord
from aioiothub.protocol.connect import CONNACK_SERVER_UNAVAILABLE

__all__ = ["Hub"]


class Hub(HubCore):
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

    # --- registry ------------------------------------------------------------------------------

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
            thumbprints: register an ``"x509"`` identity by the SHA-1 or SHA-256 thumbprints of its
                certificate alone (hex), as the service API does.

        Returns:
            The new identity.

        Raises:
            ValueError: the id is invalid or already registered, or the options do not fit
                ``authentication``.
        """
        identity = self._registry.add_device(
            device_id, authentication, primary_key, secondary_key, certificate_pem, thumbprints=thumbprints
        )
        self._provision(identity)
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
            thumbprints: register an ``"x509"`` module by its certificate's thumbprints alone.

        Returns:
            The new identity.

        Raises:
            ValueError: the device is not registered, the module id is invalid or taken, or the
                options do not fit ``authentication``.
        """
        identity = self._registry.add_module(
            device_id, module_id, authentication, primary_key, secondary_key, certificate_pem, thumbprints=thumbprints
        )
        self._provision(identity)
        return identity

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
        self._registry.set_device_status(device_id, enabled=enabled)
        if not enabled:
            self._connections.drop_device(device_id, f"device {device_id!r} was disabled")

    # --- connections -------------------------------------------------------------------------

    def is_connected(self, device_id: str, module_id: str | None = None) -> bool:
        """Whether the device or module has an accepted connection right now."""
        return self._connections.get((device_id, module_id)) is not None

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
        await self._connections.wait_connected((device_id, module_id), timeout)

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
        await self._connections.wait_disconnected((device_id, module_id), timeout)

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
        await self._connections.wait_subscribed((device_id, module_id), topic_filter, timeout)

    def is_subscribed(self, device_id: str, topic_filter: str, module_id: str | None = None) -> bool:
        """Whether the identity's live connection holds the subscription ``topic_filter`` right now.

        A connection with CleanSession=0 resumes the subscriptions of the identity's earlier
        session at once; one with CleanSession=1 starts with none.
        """
        connection = self._connections.get((device_id, module_id))
        return connection is not None and connection.is_subscribed(topic_filter)

    def drop_connection(self, device_id: str, module_id: str | None = None) -> bool:
        """Close an identity's connection abruptly, without DISCONNECT (its will is published).

        When this returns the hub no longer routes anything to the connection: :meth:`is_connected`
        is ``False`` and messages, patches and method calls wait for the next one. The socket itself
        closes asynchronously.

        Example:
            >>> hub.drop_connection("dev1")  # doctest: +SKIP
            True

        Returns:
            Whether there was a connection to drop.
        """
        return self._connections.drop((device_id, module_id), "dropped by drop_connection()")

    # --- fault injection: the methods of hub.faults, here too -------------------------------

    def refuse_connects(self, count: int, return_code: int = CONNACK_SERVER_UNAVAILABLE) -> None:
        """See :meth:`Faults.refuse_connects <aioiothub.emulator.hub.faults.Faults.refuse_connects>`."""
        self.faults.refuse_connects(count, return_code)

    def fail_twin_operations(self, count: int, status: int = 429) -> None:
        """See :meth:`Faults.fail_twin_operations <aioiothub.emulator.hub.faults.Faults.fail_twin_operations>`."""
        self.faults.fail_twin_operations(count, status)

    def ignore_twin_requests(self, count: int) -> None:
        """See :meth:`Faults.ignore_twin_requests <aioiothub.emulator.hub.faults.Faults.ignore_twin_requests>`."""
        self.faults.ignore_twin_requests(count)

    def ignore_subscribes(self, count: int) -> None:
        """See :meth:`Faults.ignore_subscribes <aioiothub.emulator.hub.faults.Faults.ignore_subscribes>`."""
        self.faults.ignore_subscribes(count)

    def drop_on_twin_requests(self, count: int) -> None:
        """See :meth:`Faults.drop_on_twin_requests <aioiothub.emulator.hub.faults.Faults.drop_on_twin_requests>`."""
        self.faults.drop_on_twin_requests(count)

    def delay_pubacks(self, seconds: float) -> None:
        """See :meth:`Faults.delay_pubacks <aioiothub.emulator.hub.faults.Faults.delay_pubacks>`."""
        self.faults.delay_pubacks(seconds)

    # --- telemetry ---------------------------------------------------------------------------

    def telemetry(self, device_id: str | None = None, module_id: str | None = None) -> list[TelemetryRecord]:
        """The telemetry received so far (at most ``telemetry_limit`` messages, oldest first).

        Example:
            >>> [record.body for record in hub.telemetry("dev1")]  # doctest: +SKIP
            [b'hello']

        Args:
            device_id: only messages of this device (and its modules, unless ``module_id`` is given).
            module_id: only messages of this module.
        """
        return self._telemetry.records(device_id, module_id)

    def clear_telemetry(self) -> None:
        """Forget all telemetry received so far."""
        self._telemetry.clear()

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
        return await self._telemetry.wait_for(count, device_id, module_id, timeout)

    def telemetry_stream(
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
        return self._telemetry.stream(device_id, module_id)

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
        return self._twins.document(self._registry.lookup(device_id, module_id).key)

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
        return await self._twins.update_desired(self._registry.lookup(device_id, module_id), patch)

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
            ServiceError: status 400, the device answered with a body that is not JSON.
        """
        return await self._methods.invoke(self._registry.lookup(device_id, module_id), method_name, payload, timeout)

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
        self._registry.lookup(device_id)
        return await self._queues.send_c2d(
            device_id, body, properties=properties, message_id=message_id, correlation_id=correlation_id,
            user_id=user_id, content_type=content_type, content_encoding=content_encoding, ack=ack, ttl=ttl,
        )

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
        self._registry.lookup(device_id, module_id)
        return await self._queues.send_to_input(
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
        return self._queues.length(self._registry.lookup(device_id, module_id).key)
