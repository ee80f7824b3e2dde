"""Direct methods a module invokes on other devices and modules, over HTTPS through its IoT Edge gateway.

``POST /twins/{deviceId}[/modules/{moduleId}]/methods?api-version=…`` to edgeHub, with the calling
module's SAS token and ``x-ms-edge-moduleId: {deviceId}/{moduleId}``; the body is
``{"methodName","payload","connectTimeoutInSeconds","responseTimeoutInSeconds"}`` and the answer
``{"status": int, "payload": …}``.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote_plus

from aioiothub._https.http import HttpSettings, HubHttp
from aioiothub._session.methods import MethodResult, encode_method_payload
from aioiothub.exceptions import ProtocolError, ServiceError
from aioiothub.protocol.connect import validate_identity
from aioiothub.protocol.sas import check_text

__all__ = ["invoke_method"]

_CONNECT_TIMEOUT_RANGE: Final = (0, 300)
_RESPONSE_TIMEOUT_RANGE: Final = (5, 300)


def _seconds(value: object, argument: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int (whole seconds), not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{argument} must be from {low} to {high} seconds, not {value!r}")
    return value


async def invoke_method(
    settings: HttpSettings,
    device_id: str,
    method_name: str,
    payload: Any,
    *,
    module_id: str | None,
    connect_timeout: int,
    response_timeout: int,
) -> MethodResult:
    """Invoke ``method_name`` on ``device_id[/module_id]`` through the gateway; see the module docstring.

    Raises:
        ServiceError: 404 when the target is not connected within ``connect_timeout``, another
            status when the gateway refused the call.
        TimeoutError: the target did not answer within ``response_timeout`` (the gateway's 504),
            or the gateway did not answer within ``connect_timeout + response_timeout`` plus the
            client's ``request_timeout``.
    """
    if settings.module_id is None:
        raise RuntimeError("invoke_method is for module clients")
    validate_identity(device_id, "device_id")
    if module_id is not None:
        validate_identity(module_id, "module_id")
    check_text(method_name, "method_name")
    encode_method_payload(payload)  # the size and JSON checks, before anything is sent
    connect = _seconds(connect_timeout, "connect_timeout", _CONNECT_TIMEOUT_RANGE)
    response = _seconds(response_timeout, "response_timeout", _RESPONSE_TIMEOUT_RANGE)
    path = f"/twins/{quote_plus(device_id)}"
    if module_id is not None:
        path += f"/modules/{quote_plus(module_id)}"
    target = device_id if module_id is None else f"{device_id}/{module_id}"
    body = {
        "methodName": method_name,
        "payload": payload,
        "connectTimeoutInSeconds": connect,
        "responseTimeoutInSeconds": response,
    }
    headers = {"x-ms-edge-moduleId": f"{settings.device_id}/{settings.module_id}"}
    what = f"method {method_name!r} on {target!r}"
    try:
        async with HubHttp(settings) as http:
            answer = await http.post_json(
                f"{path}/methods", body, what=what, headers=headers, deadline=connect + response + settings.timeout
            )
    except ServiceError as exc:
        if exc.status == 504:
            raise TimeoutError(f"{what} got no answer within response_timeout={response} s") from exc
        raise
    status = answer.get("status") if isinstance(answer, dict) else None
    if isinstance(status, bool) or not isinstance(status, int):
        raise ProtocolError(f"the gateway's answer to {what} is not {{'status': int, 'payload': ...}}")
    return MethodResult(status, answer.get("payload"))
