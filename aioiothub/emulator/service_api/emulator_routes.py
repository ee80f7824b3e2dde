"""Emulator-only REST endpoints, under ``/emulator/``: what IoT Hub does over AMQP and Event Hubs.

On the real service, cloud-to-device sends, their feedback and reading telemetry go over AMQP (the
``messages/devicebound`` link and the Event Hubs-compatible endpoint). The emulator has no AMQP, so
it offers them as REST calls of its own, outside IoT Hub's API, so that any language can drive it:

==========================================================  ===================================================
``POST /emulator/devices/{id}/messages``                    send a C2D message: JSON ``{"body" | "bodyBase64",
                                                            "properties", "messageId", "correlationId",
                                                            "userId", "contentType", "contentEncoding", "ack",
                                                            "ttlSeconds"}``; 201 ``{"messageId"}``
``GET /emulator/feedback[?deviceId=&count=&timeout=]``      feedback records (waits for ``count`` of them up to
                                                            ``timeout`` seconds, then 408)
``GET /emulator/telemetry[?deviceId=&moduleId=]``           the telemetry kept, oldest first
``GET /emulator/devices/{id}/telemetry[?count=&timeout=]``  one device's telemetry (waits as above)
``GET /emulator/telemetry/stream``, ``…/{id}/telemetry/``   new telemetry as it arrives: server-sent events
``stream[?format=jsonl]``                                   (``data: {record}``), or JSON lines
==========================================================  ===================================================

A telemetry record is :meth:`TelemetryRecord.as_dict
<aioiothub.emulator.TelemetryRecord.as_dict>`, the same data ``hub.telemetry()`` holds. Every
call needs a policy with ``ServiceConnect``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import AsyncIterator
from typing import Any, Final

from aioiothub.emulator.rest.https import HttpRequest, HttpResponse, Router
from aioiothub.emulator.service_api.context import ServiceContext
from aioiothub.emulator.service_api.errors import service_error
from aioiothub.exceptions import ServiceError

__all__ = ["install_emulator_routes"]

_KEEPALIVE: Final = 15.0
_MAX_WAIT: Final = 300.0
_SEND_FIELDS: Final = {
    "messageId": "message_id",
    "correlationId": "correlation_id",
    "userId": "user_id",
    "contentType": "content_type",
    "contentEncoding": "content_encoding",
    "ack": "ack",
}


def _wait_arguments(request: HttpRequest) -> tuple[int, float]:
    count_text = request.query.get("count", "0")
    timeout_text = request.query.get("timeout", "0")
    try:
        count = int(count_text)
        timeout = float(timeout_text)
    except ValueError:
        raise service_error(400, "ArgumentInvalid", "count and timeout must be numbers") from None
    if count < 0 or not 0 <= timeout <= _MAX_WAIT:
        raise service_error(400, "ArgumentInvalid", f"count must be >= 0 and timeout at most {_MAX_WAIT:g} s")
    return count, timeout


def _body(message: dict[str, Any]) -> bytes:
    if "bodyBase64" in message:
        try:
            return base64.b64decode(str(message["bodyBase64"]), validate=True)
        except (binascii.Error, ValueError):
            raise service_error(400, "ArgumentInvalid", "bodyBase64 is not base64") from None
    body = message.get("body", "")
    return body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")


async def _records_stream(
    context: ServiceContext, device_id: str | None, module_id: str | None, json_lines: bool
) -> AsyncIterator[bytes]:
    stream = context.hub.core.follow_telemetry(device_id, module_id, idle=_KEEPALIVE)
    try:
        yield b"" if json_lines else b": following telemetry\n\n"
        async for record in stream:
            if record is None:
                # Something now and then keeps proxies and clients with read timeouts from giving up.
                yield b"\n" if json_lines else b": keep-alive\n\n"
                continue
            line = json.dumps(record.as_dict(), separators=(",", ":")).encode("utf-8")
            yield line + b"\n" if json_lines else b"event: telemetry\ndata: " + line + b"\n\n"
    finally:
        await stream.aclose()


def install_emulator_routes(router: Router, context: ServiceContext) -> None:
    """Add the ``/emulator/…`` routes to ``router``."""
    hub = context.hub

    async def send(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "ServiceConnect")
        device = context.identity(request.params["device_id"])
        message = context.json_object(request)
        options: dict[str, Any] = {
            argument: message[name] for name, argument in _SEND_FIELDS.items() if message.get(name) is not None
        }
        try:
            if message.get("ttlSeconds") is not None:
                options["ttl"] = float(message["ttlSeconds"])
            message_id = await hub.send_c2d(
                device.device_id, _body(message), properties=message.get("properties"), **options
            )
        except ServiceError as exc:
            raise service_error(403, "DeviceMaximumQueueDepthExceeded", str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise service_error(400, "ArgumentInvalid", str(exc)) from None
        return HttpResponse.json(201, {"messageId": message_id})

    async def feedback(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "ServiceConnect")
        device_id = request.query.get("deviceId") or None
        count, timeout = _wait_arguments(request)
        try:
            if count:
                records = await hub.wait_for_feedback(count, device_id, timeout=timeout)
            else:
                records = hub.feedback(device_id)
        except TimeoutError:
            raise service_error(408, "RequestTimeout", f"fewer than {count} records in {timeout:g} s") from None
        return HttpResponse.json(200, [record.as_dict() for record in records])

    def selection(request: HttpRequest) -> tuple[str | None, str | None]:
        context.authorize(request, "ServiceConnect")
        device_id = request.params.get("device_id") or request.query.get("deviceId") or None
        if device_id is not None and "device_id" in request.params:
            context.identity(device_id)
        return device_id, request.query.get("moduleId") or None

    async def telemetry(request: HttpRequest) -> HttpResponse:
        device_id, module_id = selection(request)
        count, timeout = _wait_arguments(request)
        try:
            if count:
                records = await hub.wait_for_telemetry(count, device_id, module_id, timeout=timeout)
            else:
                records = hub.telemetry(device_id, module_id)
        except TimeoutError:
            raise service_error(408, "RequestTimeout", f"fewer than {count} messages in {timeout:g} s") from None
        return HttpResponse.json(200, [record.as_dict() for record in records])

    async def follow(request: HttpRequest) -> HttpResponse:
        device_id, module_id = selection(request)
        json_lines = request.query.get("format") == "jsonl"
        content_type = "application/x-ndjson" if json_lines else "text/event-stream"
        return HttpResponse(
            200,
            headers=(("Content-Type", content_type), ("Cache-Control", "no-cache")),
            stream=_records_stream(context, device_id, module_id, json_lines),
        )

    router.add("POST", "/emulator/devices/{device_id}/messages", send, max_body=math.ceil(64 * 1024 * 1.4) + 8192)
    router.add("GET", "/emulator/feedback", feedback)
    router.add("GET", "/emulator/telemetry", telemetry)
    router.add("GET", "/emulator/devices/{device_id}/telemetry", telemetry)
    router.add("GET", "/emulator/telemetry/stream", follow)
    router.add("GET", "/emulator/devices/{device_id}/telemetry/stream", follow)
