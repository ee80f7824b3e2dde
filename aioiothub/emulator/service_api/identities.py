"""Device and module identities: ``/devices/{id}`` and ``/devices/{id}/modules/{mid}`` (api-version 2021-04-12).

=========  =====================================  ==========================================================
method     path                                   answer
=========  =====================================  ==========================================================
PUT        ``/devices/{id}``                      200 the device; 409 ``DeviceAlreadyExists`` without ``If-Match``
GET        ``/devices/{id}``, ``/devices``        200 the device, or a list (``top`` query parameter)
DELETE     ``/devices/{id}``                      204; 412 ``PreconditionFailed`` for a stale ``If-Match``
PUT/GET/   ``/devices/{id}/modules/{mid}``,       the same for modules
DELETE     ``/devices/{id}/modules``
=========  =====================================  ==========================================================

A create gives the identity SAS keys (generated when ``symmetricKey`` is missing or empty),
certificate thumbprints (``selfSigned``) or CA authentication (``certificateAuthority``). An update
(``If-Match`` present) may change the status, keys, thumbprints, ``capabilities.iotEdge`` and
``managedBy``; the authentication type stays. Reading needs ``RegistryRead``, writing ``RegistryWrite``.
"""

from __future__ import annotations

import base64
from typing import Any

from aioiothub.emulator.hub.identity import Authentication, Identity
from aioiothub.emulator.hub.management import remove_identity, update_identity
from aioiothub.emulator.hub.values import iso_time
from aioiothub.emulator.rest.https import HttpRequest, HttpResponse, Router
from aioiothub.emulator.service_api.context import ServiceContext, activity_time, etag_matches, if_match, quoted
from aioiothub.emulator.service_api.errors import service_error

__all__ = ["identity_etag", "identity_json", "install_identities"]

_AUTH_TYPES: dict[Authentication, str] = {"sas": "sas", "x509": "selfSigned", "x509_ca": "certificateAuthority"}


def identity_etag(identity: Identity) -> str:
    """The registry entry's etag: it changes with every update."""
    return base64.b64encode(str(identity.revision).encode("ascii")).decode("ascii")


def identity_json(context: ServiceContext, identity: Identity) -> dict[str, Any]:
    """A device or module as the service API shows it."""
    hub = context.hub
    prints = sorted(identity.thumbprints, key=len)
    sha1 = [value for value in prints if len(value) == 40]
    document: dict[str, Any] = {"deviceId": identity.device_id}
    if identity.module_id is not None:
        document["moduleId"] = identity.module_id
        document["managedBy"] = identity.managed_by
    connected = hub.is_connected(identity.device_id, identity.module_id)
    document.update(
        {
            "generationId": identity.generation_id,
            "etag": identity_etag(identity),
            "connectionState": "Connected" if connected else "Disconnected",
            "connectionStateUpdatedTime": activity_time(identity.connection_state_updated_time),
            "lastActivityTime": activity_time(identity.last_activity_time),
            "cloudToDeviceMessageCount": hub.c2d_queue_length(identity.device_id, identity.module_id),
            "authentication": {
                "symmetricKey": {"primaryKey": identity.primary_key, "secondaryKey": identity.secondary_key},
                "x509Thumbprint": {
                    "primaryThumbprint": sha1[0] if sha1 else None,
                    "secondaryThumbprint": sha1[1] if len(sha1) > 1 else None,
                },
                "type": _AUTH_TYPES[identity.authentication],
            },
        }
    )
    if identity.module_id is None:
        document.update(
            {
                "status": "enabled" if identity.enabled else "disabled",
                "statusReason": identity.status_reason,
                "statusUpdatedTime": iso_time(identity.status_updated_time),
                "capabilities": {"iotEdge": identity.iot_edge},
                "deviceScope": None,
                "parentScopes": [],
            }
        )
    return document


def _answer(context: ServiceContext, identity: Identity) -> HttpResponse:
    return HttpResponse.json(200, identity_json(context, identity), (("ETag", quoted(identity_etag(identity))),))


def _text(body: dict[str, Any], *path: str) -> Any:
    value: Any = body
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _authentication(body: dict[str, Any]) -> tuple[Authentication, str | None, str | None, list[str] | None]:
    kind = _text(body, "authentication", "type") or "sas"
    if kind == "sas":
        primary = _text(body, "authentication", "symmetricKey", "primaryKey") or None
        secondary = _text(body, "authentication", "symmetricKey", "secondaryKey") or None
        return "sas", primary, secondary, None
    if kind == "selfSigned":
        prints = [
            value
            for value in (
                _text(body, "authentication", "x509Thumbprint", "primaryThumbprint"),
                _text(body, "authentication", "x509Thumbprint", "secondaryThumbprint"),
            )
            if value
        ]
        return "x509", None, None, prints
    if kind == "certificateAuthority":
        return "x509_ca", None, None, None
    raise service_error(400, "ArgumentInvalid", f"authentication type {kind!r} is not supported")


def _status(body: dict[str, Any]) -> bool | None:
    status = body.get("status")
    if status is None:
        return None
    if status not in ("enabled", "disabled"):
        raise service_error(400, "ArgumentInvalid", f"status must be 'enabled' or 'disabled', got {status!r}")
    return bool(status == "enabled")


def install_identities(router: Router, context: ServiceContext) -> None:
    """Add the identity routes to ``router``."""
    hub = context.hub

    async def put(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "RegistryWrite")
        device_id = request.params["device_id"]
        module_id = request.params.get("module_id")
        body = context.json_object(request)
        named = body.get("moduleId" if module_id is not None else "deviceId")
        if named is not None and named != (module_id if module_id is not None else device_id):
            raise service_error(400, "ArgumentInvalid", "the id in the body does not match the path")
        authentication, primary, secondary, prints = _authentication(body)
        enabled = _status(body)
        existing = hub.identities()
        current = next((i for i in existing if i.device_id == device_id and i.module_id == module_id), None)
        try:
            if current is None:
                if if_match(request) not in (None, "*"):
                    raise service_error(412, "PreconditionFailed", "the identity does not exist")
                if module_id is None:
                    identity: Identity = hub.add_device(
                        device_id,
                        authentication=authentication,
                        primary_key=primary,
                        secondary_key=secondary,
                        thumbprints=prints,
                    )
                else:
                    context.identity(device_id)
                    identity = hub.add_module(
                        device_id,
                        module_id,
                        authentication=authentication,
                        primary_key=primary,
                        secondary_key=secondary,
                        thumbprints=prints,
                    )
                identity.iot_edge = bool(_text(body, "capabilities", "iotEdge"))
                identity.managed_by = body.get("managedBy") if module_id is not None else None
                identity.status_reason = body.get("statusReason")
                update_identity(hub.core, device_id, module_id, enabled=False if enabled is False else None)
                return _answer(context, identity)
            if if_match(request) is None:
                name = "DeviceAlreadyExists" if module_id is None else "ModuleAlreadyExistsOnDevice"
                raise service_error(409, name, f"{current.label} is already registered")
            if not etag_matches(request, identity_etag(current)):
                raise service_error(412, "PreconditionFailed", f"the etag of {current.label} has changed")
            if authentication != current.authentication:
                raise service_error(400, "ArgumentInvalid", "the authentication type of an identity cannot change")
            identity = update_identity(
                hub.core,
                device_id,
                module_id,
                enabled=enabled if module_id is None else None,
                status_reason=body.get("statusReason"),
                primary_key=primary,
                secondary_key=secondary,
                thumbprints=prints or None,
                iot_edge=_text(body, "capabilities", "iotEdge") if module_id is None else None,
                managed_by=body.get("managedBy") if module_id is not None else None,
            )
        except (ValueError, TypeError) as exc:
            raise service_error(400, "ArgumentInvalid", str(exc)) from None
        return _answer(context, identity)

    async def get(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "RegistryRead")
        return _answer(context, context.identity(request.params["device_id"], request.params.get("module_id")))

    async def delete(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "RegistryWrite")
        identity = context.identity(request.params["device_id"], request.params.get("module_id"))
        if not etag_matches(request, identity_etag(identity)):
            raise service_error(412, "PreconditionFailed", f"the etag of {identity.label} has changed")
        remove_identity(hub.core, identity.device_id, identity.module_id)
        return HttpResponse(204)

    async def list_devices(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "RegistryRead")
        top = request.query.get("top")
        limit = int(top) if top is not None and top.isdigit() else 1000
        devices = [identity for identity in hub.identities() if identity.module_id is None][:limit]
        return HttpResponse.json(200, [identity_json(context, identity) for identity in devices])

    async def list_modules(request: HttpRequest) -> HttpResponse:
        context.authorize(request, "RegistryRead")
        device = context.identity(request.params["device_id"])
        modules = [i for i in hub.identities() if i.device_id == device.device_id and i.module_id is not None]
        return HttpResponse.json(200, [identity_json(context, identity) for identity in modules])

    async def purge_queue(request: HttpRequest) -> HttpResponse:
        # IoT Hub's "purge command queue": every waiting cloud-to-device message goes, with "Purged" feedback.
        context.authorize(request, "ServiceConnect")
        device = context.identity(request.params["device_id"])
        purged = hub.core.queues.purge(device.key)
        hub.core.report_service_call(device.device_id, None, f"{purged} cloud-to-device message(s) purged")
        body = {"totalMessagesPurged": purged, "deviceId": device.device_id, "moduleId": None}
        return HttpResponse.json(200, body)

    router.add("DELETE", "/devices/{device_id}/commands", purge_queue)
    for pattern in ("/devices/{device_id}", "/devices/{device_id}/modules/{module_id}"):
        router.add("PUT", pattern, put)
        router.add("GET", pattern, get)
        router.add("DELETE", pattern, delete)
    router.add("GET", "/devices", list_devices)
    router.add("GET", "/devices/", list_devices)  # the Node.js SDK's Registry.list() path
    router.add("GET", "/devices/{device_id}/modules", list_modules)
