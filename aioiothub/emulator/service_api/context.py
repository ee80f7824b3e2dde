"""What every service route needs: the hub, its policies, the host names tokens may name, JSON in."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aioiothub.emulator.hub import Hub
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.values import NEVER, precise_time
from aioiothub.emulator.rest.https import HttpRequest
from aioiothub.emulator.service_api.errors import service_error
from aioiothub.emulator.service_api.policies import Right, SharedAccessPolicy, authorize

__all__ = ["NEVER", "ServiceContext", "activity_time", "etag_matches", "if_match", "quoted"]

def activity_time(moment: datetime.datetime | None) -> str:
    """A connection-state or activity time as IoT Hub writes it (:func:`~aioiothub.emulator.hub.values.precise_time`),
    or :data:`~aioiothub.emulator.hub.values.NEVER`."""
    return NEVER if moment is None else precise_time(moment)


def quoted(etag: str) -> str:
    """An etag as an HTTP header value."""
    return f'"{etag}"'


def if_match(request: HttpRequest) -> str | None:
    """The request's ``If-Match`` without quotes (the Python SDK quotes even ``*``), or ``None``."""
    wanted = request.headers.get("if-match")
    return None if wanted is None else wanted.strip().strip('"')


def etag_matches(request: HttpRequest, etag: str) -> bool:
    """Whether the request's ``If-Match`` is absent, ``*`` or ``etag`` (quoted or not)."""
    wanted = if_match(request)
    return wanted is None or wanted in ("*", etag)


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """The hub behind the service routes, and how callers are authorized.

    Attributes:
        hub: the hub.
        policies: its shared access policies.
        scopes: returns the host names a token's ``sr`` may name (the port is known once listening).
    """

    hub: Hub
    policies: Sequence[SharedAccessPolicy]
    scopes: Callable[[], Sequence[str]]

    def authorize(self, request: HttpRequest, right: Right) -> SharedAccessPolicy:
        """See :func:`~aioiothub.emulator.service_api.policies.authorize`."""
        return authorize(request, self.policies, scopes=self.scopes(), right=right)

    def json_object(self, request: HttpRequest) -> dict[str, Any]:
        """The body as a JSON object; 400 ``ArgumentInvalid`` otherwise."""
        try:
            body = request.json()
        except Exception:
            raise service_error(400, "ArgumentInvalid", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise service_error(400, "ArgumentInvalid", "the request body must be a JSON object")
        return body

    def identity(self, device_id: str, module_id: str | None = None) -> Identity:
        """The registered identity; 404 ``DeviceNotFound`` / ``ModuleNotFound`` otherwise."""
        try:
            device = self.hub.identity(device_id)
        except ValueError:
            raise service_error(404, "DeviceNotFound", f"Device {device_id} not registered") from None
        if module_id is None:
            return device
        try:
            return self.hub.identity(device_id, module_id)
        except ValueError:
            raise service_error(404, "ModuleNotFound", f"Module {module_id} on device {device_id} not found") from None
