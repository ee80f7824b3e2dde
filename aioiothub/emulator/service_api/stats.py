"""Registry and service statistics: ``GET /statistics/devices`` and ``GET /statistics/service``."""

from __future__ import annotations

from aioiothub.emulator.rest.https import HttpRequest, HttpResponse, Router
from aioiothub.emulator.service_api.context import ServiceContext

__all__ = ["install_statistics"]


def install_statistics(router: Router, context: ServiceContext) -> None:
    """Add the statistics routes to ``router`` (``RegistryRead`` and ``ServiceConnect``)."""
    hub = context.hub

    async def devices(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "RegistryRead")
        devices = [identity for identity in hub.identities() if identity.module_id is None]
        enabled = sum(1 for identity in devices if identity.enabled)
        counts = {"totalDeviceCount": len(devices), "enabledDeviceCount": enabled}
        return HttpResponse.json(200, {**counts, "disabledDeviceCount": len(devices) - enabled})

    async def service(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "ServiceConnect")
        connected = sum(1 for i in hub.identities() if i.module_id is None and hub.is_connected(i.device_id))
        return HttpResponse.json(200, {"connectedDeviceCount": connected})

    router.add("GET", "/statistics/devices", devices)
    router.add("GET", "/statistics/service", service)
