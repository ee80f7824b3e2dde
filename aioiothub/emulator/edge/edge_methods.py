"""Direct methods invoked by an IoT Edge module over HTTPS, as edgeHub serves them.

``POST /twins/{deviceId}[/modules/{moduleId}]/methods`` with ``x-ms-edge-moduleId: {device}/{module}``
and the calling module's SAS token; the body is ``{"methodName","payload","connectTimeoutInSeconds",
"responseTimeoutInSeconds"}``. The call goes to the target's MQTT connection through
:meth:`Hub.invoke_method`. The answer is 200 ``{"status","payload"}`` with the target's own status;
404 (error code 404103) when the target is not connected and subscribed to methods within
``connectTimeoutInSeconds``; 504 (504101) when it does not answer within
``responseTimeoutInSeconds``. Service-side callers -- the same path without the Edge header,
authenticated with a shared access policy (:mod:`aioiothub.emulator.service_api`) -- are checked
by the ``authorize_service`` callable and then served the same way.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable
from typing import Any, Final

from aioiothub.emulator.hub import Hub
from aioiothub.emulator.rest.http_auth import authenticate
from aioiothub.emulator.rest.https import HttpError, HttpRequest, HttpResponse, Router
from aioiothub.protocol.limits import MAX_METHOD_PAYLOAD_BYTES
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION

__all__ = ["install_edge_methods"]

_EDGE_MODULE_HEADER: Final = "x-ms-edge-moduleid"
_OFFLINE: Final = 404103
_TIMED_OUT: Final = 504101
_TIMEOUT_RANGES: Final = {"connectTimeoutInSeconds": (0, 300, 0), "responseTimeoutInSeconds": (5, 300, 30)}


def _hub_error(status: int, code: int, message: str, timeout: int) -> HttpError:
    detail = {
        "errorCode": code,
        "trackingId": uuid.uuid4().hex,
        "message": message,
        "info": {"timeout": str(datetime.timedelta(seconds=timeout)).rjust(8, "0")},
        "timestampUtc": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    body = {"Message": json.dumps(detail), "ExceptionMessage": ""}
    return HttpError(status, message, error_code=code, response=HttpResponse.json(status, body))


def _timeout(body: dict[str, Any], name: str) -> int:
    low, high, default = _TIMEOUT_RANGES[name]
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HttpError(400, f"{name} must be an integer from {low} to {high}, got {value!r}", error_code=400027)
    return value


def install_edge_methods(
    router: Router, hub: Hub, *, authorize_service: Callable[[HttpRequest], object] | None = None
) -> None:
    """Add the direct-method routes to ``router``.

    Args:
        router: where the routes go.
        hub: the hub whose devices and modules are called.
        authorize_service: checks a caller without the Edge header (a service SDK) and raises
            :class:`HttpError` to refuse it; without it such callers are refused with 401.
    """

    async def invoke(request: HttpRequest) -> HttpResponse:
        caller = request.headers.get(_EDGE_MODULE_HEADER)
        if caller is None:
            if authorize_service is None:
                raise HttpError(401, "only IoT Edge modules (x-ms-edge-moduleId) call methods here", error_code=401002)
            authorize_service(request)
        else:
            caller_device, separator, caller_module = caller.partition("/")
            if not separator or not caller_module:
                raise HttpError(
                    400, f"x-ms-edge-moduleId {caller!r} is not '{{deviceId}}/{{moduleId}}'", error_code=400004
                )
            authenticate(hub, request, caller_device, caller_module)
        device_id = request.params["device_id"]
        module_id = request.params.get("module_id")
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object", error_code=400004)
        method_name = body.get("methodName")
        if not isinstance(method_name, str) or not method_name:
            raise HttpError(400, "methodName must be a non-empty string", error_code=400004)
        connect_timeout = _timeout(body, "connectTimeoutInSeconds")
        response_timeout = _timeout(body, "responseTimeoutInSeconds")
        payload = body.get("payload")
        if len(json.dumps(payload, separators=(",", ":"))) > MAX_METHOD_PAYLOAD_BYTES:
            raise HttpError(413, f"payload is over {MAX_METHOD_PAYLOAD_BYTES} bytes", error_code=413001)
        try:
            hub.identity(device_id, module_id)
        except ValueError:
            raise _hub_error(404, 404001, "the target device or module is not registered", connect_timeout) from None
        try:
            await hub.wait_subscribed(device_id, METHODS_SUBSCRIPTION, module_id, timeout=max(connect_timeout, 0.001))
        except TimeoutError:
            raise _hub_error(404, _OFFLINE, "Timed out waiting for device to connect.", connect_timeout) from None
        result = await hub.invoke_method(device_id, method_name, payload, module_id=module_id, timeout=response_timeout)
        error = result.payload.get("errorCode") if isinstance(result.payload, dict) else None
        if result.status == 404 and error == _OFFLINE:
            raise _hub_error(404, _OFFLINE, "the device disconnected before answering", connect_timeout)
        if result.status == 504 and error == _TIMED_OUT:
            raise _hub_error(504, _TIMED_OUT, "Timed out waiting for the response from device.", response_timeout)
        answer = result.payload
        if isinstance(answer, bytes):
            answer = answer.decode("utf-8", "replace")
        return HttpResponse.json(200, {"status": result.status, "payload": answer})

    router.add("POST", "/twins/{device_id}/methods", invoke)
    router.add("POST", "/twins/{device_id}/modules/{module_id}/methods", invoke)
