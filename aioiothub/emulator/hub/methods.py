"""Direct methods: requests published to a device with a fresh ``$rid``, answers matched back to callers.

Theory of operation
-------------------
A call moves through three states. It is *refused* (404) when the identity has no connection or the
connection does not hold the methods subscription. Otherwise it is *pending*: the request is
published and a :class:`_PendingCall` waits under its ``$rid`` until the deadline. The device's answer
*completes* it: the answer is matched by ``$rid`` and identity (an answer from another identity, or
for a call no longer pending, is ignored), its body decoded as JSON, and the caller woken. A call
still pending at the deadline ends in 504, whatever arrives later. An answer whose body is not JSON
completes the call with an error, which the caller receives as :class:`~aioiothub.exceptions.ServiceError`
400, as IoT Hub reports it to a service; the device's connection is not affected.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import anyio

from aioiothub._session.methods import MethodResult
from aioiothub.emulator.hub.connections import ConnectionTable
from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.values import json_bytes
from aioiothub.exceptions import ProtocolError, ServiceError
from aioiothub.protocol.json_payloads import load_json_payload
from aioiothub.protocol.limits import MAX_METHOD_PAYLOAD_BYTES
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, method_request_topic

__all__ = ["DirectMethods", "MethodResult"]

logger = logging.getLogger("aioiothub.emulator")


_OFFLINE = MethodResult(404, {"errorCode": 404103, "message": "the device is not online"})
_TIMED_OUT = MethodResult(504, {"errorCode": 504101, "message": "timed out waiting for the device"})


@dataclass(slots=True, eq=False)
class _PendingCall:
    key: IdentityKey
    done: anyio.Event
    result: MethodResult | None = None
    #: Why the device's answer could not be read, when it could not.
    error: str | None = None


class DirectMethods:
    """The direct method calls of one hub.

    Args:
        connections: where requests go.
    """

    __slots__ = ("_connections", "_pending", "_request_ids")

    def __init__(self, connections: ConnectionTable) -> None:
        self._connections = connections
        self._pending: dict[str, _PendingCall] = {}
        self._request_ids = itertools.count(1)

    async def invoke(self, identity: Identity, method_name: str, payload: Any, timeout: float) -> MethodResult:  # noqa: ASYNC109
        """Call a method and wait for the answer (see :meth:`Hub.invoke_method <aioiothub.emulator.Hub.invoke_method>`).

        Raises:
            ValueError: an invalid method name or timeout, or a payload over 128 KiB.
            TypeError: the payload is not JSON-serialisable.
            ServiceError: status 400, the device answered with a body that is not JSON.
        """
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        try:
            body = json_bytes(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"payload is not JSON-serialisable: {exc}") from None
        if len(body) > MAX_METHOD_PAYLOAD_BYTES:
            raise ValueError(f"payload is {len(body)} bytes of JSON; the limit is {MAX_METHOD_PAYLOAD_BYTES}")
        request_id = str(next(self._request_ids))
        topic = method_request_topic(method_name, request_id)
        connection = self._connections.get(identity.key)
        if connection is None or not connection.is_subscribed(METHODS_SUBSCRIPTION):
            return _OFFLINE
        pending = self._pending[request_id] = _PendingCall(identity.key, anyio.Event())
        try:
            with anyio.move_on_after(timeout):
                if not await connection.publish(topic, body):
                    return _OFFLINE
                await pending.done.wait()
        finally:
            del self._pending[request_id]
        if pending.error is not None:
            raise ServiceError(
                f"{identity.label} answered method {method_name!r}: {pending.error}", status=400, request_id=request_id
            )
        if pending.result is None:
            return _TIMED_OUT
        return pending.result

    def complete(self, identity: Identity, request_id: str, status: int, body: bytes) -> None:
        """Hand a device's answer to the waiting caller; answers nobody waits for are ignored."""
        pending = self._pending.get(request_id)
        if pending is None or pending.key != identity.key or pending.done.is_set():
            logger.debug("%s: method response for unknown $rid %r ignored", identity.label, request_id)
            return
        try:
            payload = load_json_payload(body, "the method response") if body else None
        except ProtocolError as exc:
            logger.info("%s: method response %r refused: %s", identity.label, request_id, exc)
            pending.error = str(exc)
        else:
            pending.result = MethodResult(status, payload)
        pending.done.set()
