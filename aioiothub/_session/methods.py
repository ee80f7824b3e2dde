"""Direct methods: requests as a device receives them, and results as a caller gets them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aioiothub.protocol.limits import MAX_METHOD_PAYLOAD_BYTES

__all__ = ["MethodRequest", "MethodResult", "encode_method_payload"]


def encode_method_payload(payload: Any, *, argument: str = "payload") -> bytes:
    """Serialise a method payload to compact JSON, checking the 128 KiB limit.

    Raises:
        TypeError: the payload is not JSON-serialisable.
        ValueError: the payload is larger than IoT Hub accepts.
    """
    if payload is None:
        return b""
    try:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{argument} must be JSON-serialisable: {exc}") from None
    if len(body) > MAX_METHOD_PAYLOAD_BYTES:
        raise ValueError(f"{argument} is {len(body)} bytes as JSON; IoT Hub accepts at most {MAX_METHOD_PAYLOAD_BYTES}")
    return body


@dataclass(frozen=True, slots=True)
class MethodResult:
    """What the target of a direct method answered (to a module, or to the emulator's caller).

    Attributes:
        status: the status the target device or module chose.
        payload: its JSON answer decoded (``None`` when empty).

    Example:
        >>> MethodResult(200, {"rebooting": True}).status
        200
    """

    status: int
    payload: Any


class MethodRequest:
    """A direct method invocation waiting for the device's answer.

    Attributes:
        name: the method name as invoked (``"component*command"`` for Plug and Play components).
        payload: the request payload decoded from JSON (``None`` when empty).
        request_id: the hub's ``$rid`` for this invocation.
        component: the Plug and Play component, or ``None``.
        command: the command (the method name without its component).

    Example:
        >>> async def serve(client):
        ...     async for request in client.method_requests():
        ...         if request.name == "reboot":
        ...             await request.respond(200, {"rebooting": True})
        ...         else:
        ...             await request.respond(404, {"error": f"unknown method {request.name}"})
    """

    __slots__ = ("_responder", "command", "component", "name", "payload", "request_id", "responded")

    def __init__(
        self,
        *,
        name: str,
        payload: Any,
        request_id: str,
        component: str | None,
        command: str,
        responder: Callable[[str, int, bytes], Awaitable[None]],
    ) -> None:
        self.name = name
        self.payload = payload
        self.request_id = request_id
        self.component = component
        self.command = command
        self.responded = False
        self._responder = responder

    def __repr__(self) -> str:
        return f"MethodRequest(name={self.name!r}, request_id={self.request_id!r}, payload={self.payload!r})"

    async def respond(self, status: int, payload: Any = None) -> None:
        """Answer the invocation; returns once the hub acknowledged the response.

        Args:
            status: any integer status; the service caller sees it as the method's result.
            payload: a JSON-serialisable value (at most 128 KiB encoded), or ``None``.

        Raises:
            TypeError: ``status`` is not an integer or ``payload`` is not JSON-serialisable.
            ValueError: the encoded payload is over 128 KiB.
            RuntimeError: this request was already answered.
            ConnectionLostError: the connection dropped; the hub has already failed the invocation.
            TimeoutError: the hub did not acknowledge the response within ``request_timeout``.
        """
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an integer, not {type(status).__name__}")
        body = encode_method_payload(payload)
        if self.responded:
            raise RuntimeError(f"method request {self.request_id!r} was already answered")
        self.responded = True
        await self._responder(self.request_id, status, body)
