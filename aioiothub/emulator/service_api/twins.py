"""Device and module twins: ``/twins/{id}`` and ``/twins/{id}/modules/{mid}`` (api-version 2021-04-12).

``GET`` answers the twin; ``PATCH`` merges ``tags`` and ``properties.desired`` (JSON merge patch,
``null`` deletes); ``PUT`` replaces both. A write with an ``If-Match`` other than ``*`` or the
twin's current etag is refused with 412 ``PreconditionFailed``. A desired change reaches the device
as a desired-properties notification, as :meth:`Hub.update_desired` sends it. Reported properties
are the device's: a service write that carries them ignores them. Needs ``ServiceConnect``.
"""

from __future__ import annotations

from typing import Any

from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.twins import twin_etag
from aioiothub.emulator.hub.values import iso_time
from aioiothub.emulator.rest.https import HttpRequest, HttpResponse, Router
from aioiothub.emulator.service_api.context import ServiceContext, activity_time, etag_matches, quoted
from aioiothub.emulator.service_api.errors import service_error
from aioiothub.emulator.service_api.identities import identity_etag

__all__ = ["install_twins", "twin_etag", "twin_json"]

_AUTHENTICATION_TYPES = {"sas": "sas", "x509": "selfSigned", "x509_ca": "certificateAuthority"}


def twin_json(context: ServiceContext, identity: Identity) -> dict[str, Any]:
    """A twin as the service API and queries show it."""
    hub = context.hub
    state = hub.twin_state(identity.device_id, identity.module_id)
    device = hub.identity(identity.device_id)
    document: dict[str, Any] = {"deviceId": identity.device_id}
    if identity.module_id is not None:
        document["moduleId"] = identity.module_id
    connected = hub.is_connected(identity.device_id, identity.module_id)
    document.update(
        {
            "etag": twin_etag(state["version"]),
            "deviceEtag": identity_etag(identity),
            "status": "enabled" if device.enabled else "disabled",
            "statusReason": device.status_reason,
            "statusUpdateTime": iso_time(device.status_updated_time),
            "connectionState": "Connected" if connected else "Disconnected",
            "lastActivityTime": activity_time(identity.last_activity_time),
            "cloudToDeviceMessageCount": hub.c2d_queue_length(identity.device_id, identity.module_id),
            "authenticationType": _AUTHENTICATION_TYPES[identity.authentication],
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "modelId": identity.model_id or "",
            "version": state["version"],
            "tags": state["tags"],
            "properties": {
                "desired": {**state["desired"], "$version": state["desired_version"]},
                "reported": {**state["reported"], "$version": state["reported_version"]},
            },
            "capabilities": {"iotEdge": device.iot_edge},
        }
    )
    return document


def _answer(context: ServiceContext, identity: Identity) -> HttpResponse:
    document = twin_json(context, identity)
    return HttpResponse.json(200, document, (("ETag", quoted(document["etag"])),))


def _sections(body: dict[str, Any]) -> tuple[Any, Any]:
    properties = body.get("properties")
    if properties is not None and not isinstance(properties, dict):
        raise service_error(400, "ArgumentInvalid", "properties must be a JSON object")
    return body.get("tags"), (properties or {}).get("desired")


def install_twins(router: Router, context: ServiceContext) -> None:
    """Add the twin routes to ``router``."""
    hub = context.hub

    def target(request: HttpRequest) -> Identity:
        context.authorize(request, "ServiceConnect")
        return context.identity(request.params["device_id"], request.params.get("module_id"))

    def check_etag(request: HttpRequest, identity: Identity) -> None:
        version = hub.twin_state(identity.device_id, identity.module_id)["version"]
        if not etag_matches(request, twin_etag(version)):
            raise service_error(412, "PreconditionFailed", f"the twin of {identity.label} has changed")

    async def get(request: HttpRequest) -> HttpResponse:
        return _answer(context, target(request))

    async def patch(request: HttpRequest) -> HttpResponse:
        identity = target(request)
        tags, desired = _sections(context.json_object(request))
        check_etag(request, identity)
        try:
            await hub.update_twin(identity.device_id, module_id=identity.module_id, tags=tags, desired=desired)
        except (ValueError, TypeError) as exc:
            raise service_error(400, "ArgumentInvalid", str(exc)) from None
        return _answer(context, identity)

    async def put(request: HttpRequest) -> HttpResponse:
        identity = target(request)
        tags, desired = _sections(context.json_object(request))
        check_etag(request, identity)
        try:
            await hub.replace_twin(
                identity.device_id, module_id=identity.module_id, tags=tags or {}, desired=desired or {}
            )
        except (ValueError, TypeError) as exc:
            raise service_error(400, "ArgumentInvalid", str(exc)) from None
        return _answer(context, identity)

    for pattern in ("/twins/{device_id}", "/twins/{device_id}/modules/{module_id}"):
        router.add("GET", pattern, get)
        router.add("PATCH", pattern, patch)
        router.add("PUT", pattern, put)
