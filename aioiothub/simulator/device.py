"""One simulated device: connect, send telemetry on schedule, and behave like a real device.

Behaviour besides telemetry, so that a whole solution can be exercised:

- after connecting it reads its twin and acknowledges the desired properties it finds;
- it acknowledges every desired-property patch the Plug and Play way
  (``{"<prop>": {"value": …, "ac": 200, "av": <desired $version>, "ad": …}}`` in reported properties);
- it answers every direct method with status 200 and an echo of the call;
- it takes every cloud-to-device message;
- with a report interval, it reports ``{"simulator": {"reports": n}}`` on that schedule;
- with an outbox (``--outbox``), each send returns once the message is committed to the file, the
  client delivers it in the background, and the device counts as finished once its outbox is empty.

When the fleet is provisioned through DPS, the device registers first (once; a connect that fails
afterwards is retried against the assigned hub). Every outcome is counted in the process's
:class:`~aioiothub.simulator.stats.FleetStats`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import time
from collections.abc import Mapping
from typing import Any, Final

import anyio

from aioiothub import (
    AuthenticationError,
    IoTHubDeviceClient,
    IoTHubError,
    Outbox,
    RegistrationResult,
    ServiceError,
    ThrottledError,
    pnp,
)
from aioiothub.simulator.endpoint import FleetEndpoint
from aioiothub.simulator.stats import FleetStats
from aioiothub.simulator.traffic import MessageFactory, TrafficSettings

__all__ = ["SimulatedDevice", "writable_property_ack"]

logger = logging.getLogger("aioiothub.simulator")

ACK_DESCRIPTION: Final = "applied by aioiothub simulate"
_RETRY_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
# What a device operation may fail with while the run goes on; each is counted, none stops the device.
_OPERATION_ERRORS: Final = (IoTHubError, TimeoutError)


def _refusal(error: BaseException) -> bool:
    """Whether ``error`` is DPS's final "no" (failed, disabled, 4xx) rather than a failure worth retrying
    (429, 5xx, a dropped connection)."""
    return isinstance(error, ServiceError) and error.status < 500 and not isinstance(error, ThrottledError)


def writable_property_ack(desired: Mapping[str, Any], *, status: int = 200) -> dict[str, Any]:
    """The Plug and Play acknowledgement of every writable property in ``desired`` (a twin's
    desired section or a desired patch, with its ``$version``), built with :mod:`aioiothub.pnp`.

    Component properties (a value marked ``"__t": "c"``) are acknowledged inside their component.
    Deleted properties (``None``) need no acknowledgement.

    Example:
        >>> writable_property_ack({"interval": 5, "$version": 7})
        {'interval': {'value': 5, 'ac': 200, 'av': 7, 'ad': 'applied by aioiothub simulate'}}
    """
    acknowledgement: dict[str, Any] = {}
    for request in pnp.split_desired_patch(desired):
        if request.value is None:
            continue
        for name, value in request.response(status, ACK_DESCRIPTION).items():
            if request.component is not None and name in acknowledgement:
                acknowledgement[name].update(value)  # another property of the same component
            else:
                acknowledgement[name] = value
    return acknowledgement


class SimulatedDevice:
    """One device of the fleet (see the module docstring for what it does).

    Args:
        device_id: the device.
        endpoint: how to reach the hub.
        traffic: what to send.
        messages: the process's message factory.
        stats: where to count.
        ssl_context: the TLS context shared by the process's clients.
        outbox: the process's outbox file (every device has its queue in it), or ``None``.
    """

    def __init__(
        self,
        device_id: str,
        endpoint: FleetEndpoint,
        traffic: TrafficSettings,
        messages: MessageFactory,
        stats: FleetStats,
        ssl_context: ssl.SSLContext | None,
        outbox: Outbox | None = None,
    ) -> None:
        self.device_id = device_id
        self._endpoint = endpoint
        self._traffic = traffic
        self._messages = messages
        self._stats = stats
        self._ssl_context = ssl_context
        self._outbox = outbox
        self._up = False

    async def run(self, connect_gate: anyio.Semaphore) -> None:
        """Connect (at most ``connect_gate``'s value of devices connect at once) and simulate until
        cancelled. Returns early only when the device cannot be connected for good."""
        queue = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await self._connect(stack, connect_gate)
                if client is None:
                    return
                queue = client.outbox
                if queue is not None:
                    self._stats.track_outbox(queue)
                self._set_up(True)
                # Cancellation (the end of the run) leaves the gauges as they were, so that the
                # summary shows the fleet as it was when the run stopped.
                await self._behave(client)
        except _OPERATION_ERRORS as exc:
            # The session gave up (reconnect attempts exhausted, credentials refused on renewal).
            self._set_up(False)
            self._stats.fail("devices_lost", exc)
            logger.warning("device %s stopped: %s", self.device_id, exc)
        finally:
            if queue is not None:
                # Once the client has closed, so that its last acknowledgements are counted.
                self._stats.untrack_outbox(queue)

    async def _connect(self, stack: contextlib.AsyncExitStack, gate: anyio.Semaphore) -> IoTHubDeviceClient | None:
        attempt = 0
        registration: RegistrationResult | None = None
        while True:
            try:
                async with gate:
                    if registration is None and self._endpoint.id_scope is not None:
                        # Registered once: a connect that fails afterwards retries the hub, not DPS.
                        registration = await self._endpoint.register(self.device_id, self._ssl_context)
                        self._stats.add("registrations")
                    client = self._endpoint.client(
                        self.device_id, self._ssl_context, registration=registration, outbox=self._outbox
                    )
                    await stack.enter_async_context(client)
            except AuthenticationError as exc:
                self._stats.fail("connect_failures", exc)
                self._stats.fail("devices_lost", exc)
                logger.warning("device %s was refused: %s", self.device_id, exc)
                return None
            except (*_OPERATION_ERRORS, OSError) as exc:
                if _refusal(exc):
                    # DPS refused the registration for good (a disabled group, a failed allocation).
                    self._stats.fail("connect_failures", exc)
                    self._stats.fail("devices_lost", exc)
                    logger.warning("device %s was refused: %s", self.device_id, exc)
                    return None
                self._stats.fail("connect_failures", exc)
                delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                logger.info("device %s could not connect (%s); retrying in about %.0f s", self.device_id, exc, delay)
                attempt += 1
                await anyio.sleep(delay * random.uniform(0.5, 1.5))
                continue
            return client

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            self._stats.add("connected", 1 if up else -1)
            self._up = up

    async def _behave(self, client: IoTHubDeviceClient) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._watch_connection, client, name=f"{self.device_id} connection states")
            tasks.start_soon(self._answer_methods, client, name=f"{self.device_id} methods")
            tasks.start_soon(self._follow_desired, client, name=f"{self.device_id} desired properties")
            tasks.start_soon(self._take_cloud_messages, client, name=f"{self.device_id} cloud messages")
            await self._initial_twin(client)
            if self._traffic.report_interval is not None:
                tasks.start_soon(self._report, client, self._traffic.report_interval, name=f"{self.device_id} reports")
            await self._send_telemetry(client)
            if client.outbox is not None:
                await client.outbox.flush()  # finished once every message is acknowledged by the hub
            self._stats.add("finished")
            await anyio.sleep_forever()

    async def _watch_connection(self, client: IoTHubDeviceClient) -> None:
        states = client.connection_states()
        self._set_up(await anext(states))  # the state now: connected, the first time
        async for up in states:  # then each change
            if up:
                self._stats.add("reconnects")
            self._set_up(up)

    async def _initial_twin(self, client: IoTHubDeviceClient) -> None:
        try:
            twin = await client.get_twin()
        except _OPERATION_ERRORS as exc:
            self._stats.fail("twin_failures", exc)
            return
        self._stats.add("twin_reads")
        await self._acknowledge(client, twin.desired)

    async def _acknowledge(self, client: IoTHubDeviceClient, desired: Mapping[str, Any]) -> None:
        acknowledgement = writable_property_ack(desired)
        if not acknowledgement:
            return
        try:
            await client.update_reported_properties(acknowledgement)
        except _OPERATION_ERRORS as exc:
            self._stats.fail("twin_failures", exc)
            return
        self._stats.add("desired_acknowledged")

    async def _follow_desired(self, client: IoTHubDeviceClient) -> None:
        async for patch in client.desired_property_patches():
            self._stats.add("desired_patches")
            await self._acknowledge(client, patch)

    async def _answer_methods(self, client: IoTHubDeviceClient) -> None:
        async for request in client.method_requests():
            try:
                await request.respond(200, {"device": self.device_id, "method": request.name, "echo": request.payload})
            except _OPERATION_ERRORS as exc:
                self._stats.fail("twin_failures", exc)
                continue
            self._stats.add("methods_answered")

    async def _take_cloud_messages(self, client: IoTHubDeviceClient) -> None:
        async for _message in client.cloud_messages():
            self._stats.add("c2d_received")

    async def _report(self, client: IoTHubDeviceClient, interval: float) -> None:
        reports = 0
        while True:
            await anyio.sleep(interval * random.uniform(0.9, 1.1))
            reports += 1
            try:
                await client.update_reported_properties({"simulator": {"reports": reports}})
            except _OPERATION_ERRORS as exc:
                self._stats.fail("twin_failures", exc)
                continue
            self._stats.add("reported_updates")

    async def _send_telemetry(self, client: IoTHubDeviceClient) -> None:
        traffic, stats = self._traffic, self._stats
        # The first message comes at a random point of the first interval, so that a fleet that
        # connected together does not send together.
        next_at = time.monotonic() + random.uniform(0, traffic.interval)
        counter = 0
        while traffic.messages is None or counter < traffic.messages:
            await anyio.sleep(max(0.0, next_at - time.monotonic()))
            counter += 1
            message = self._messages.build(self.device_id, counter)
            stats.add("sent")
            started = time.perf_counter()
            try:
                await client.send_message(message, qos=traffic.qos)
            except _OPERATION_ERRORS as exc:
                stats.fail("failed", exc)
                logger.info("device %s: message %d failed: %s", self.device_id, counter, exc)
            else:
                stats.record_send(time.perf_counter() - started)
            spread = traffic.jitter * random.uniform(-1.0, 1.0)
            # Late (a slow send, a reconnect): carry on from now rather than send a burst to catch up.
            next_at = max(next_at + traffic.interval * (1.0 + spread), time.monotonic())
