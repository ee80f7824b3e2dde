"""The hub's file-upload endpoints: hand out a blob SAS, take the device's notification.

``POST /devices/{id}/files`` answers ``{"correlationId","hostName","containerName","blobName",
"sasToken"}`` with ``blobName = {deviceId}/{name}``; ``POST /devices/{id}/files/notifications``
takes ``{"correlationId","isSuccess","statusCode","statusDescription"}`` and answers 204. Both are
authenticated like an MQTT CONNECT of that device. A correlation id stays valid for the SAS
lifetime; IoT Hub allows 10 uploads in progress per device and answers 429 past that. A successful
upload whose blob exists is announced to back ends as a
:class:`~aioiothub.emulator.hub.service_bound.FileNotification` (read over AMQP).
"""

from __future__ import annotations

import datetime
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx

from aioiothub.emulator.hub import Hub
from aioiothub.emulator.hub.service_bound import FileNotification
from aioiothub.emulator.rest.http_auth import authenticate
from aioiothub.emulator.rest.https import HttpError, HttpRequest, HttpResponse, Router
from aioiothub.emulator.storage.upload_storage import UploadStorage
from aioiothub.protocol.blob import blob_url

__all__ = ["MAX_UPLOADS_IN_PROGRESS", "FileUploads", "UploadRecord"]

MAX_UPLOADS_IN_PROGRESS: Final = 10
_MAX_BLOB_NAME: Final = 1024

logger = logging.getLogger("aioiothub.emulator")


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """A file upload a device has finished and notified the hub about.

    Attributes:
        device_id: the uploading device.
        blob_name: the blob's name in the container (``{deviceId}/{name}``).
        container: the upload container.
        blob_url: the blob's URL, without a SAS.
        correlation_id: the id the hub issued for this upload.
        is_success: what the device reported.
        status_code: the status the device reported.
        status_description: the description the device reported.
        notified_at: when the notification arrived (UTC).
    """

    device_id: str
    blob_name: str
    container: str
    blob_url: str
    correlation_id: str
    is_success: bool
    status_code: int
    status_description: str
    notified_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class _Pending:
    device_id: str
    blob_name: str
    expires_at: float


def _field(body: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise HttpError(400, f"{what} needs {name!r} as {kind.__name__}", error_code=400004)
    return value


class FileUploads:
    """File-upload bookkeeping and its two routes.

    Args:
        hub: where identities are checked.
        storage: where blobs go.
        sas_ttl: lifetime of each blob SAS (and of its correlation id) in seconds.
    """

    def __init__(self, hub: Hub, storage: UploadStorage, *, sas_ttl: float = 3600.0) -> None:
        self._hub = hub
        self.storage = storage
        self._sas_ttl = sas_ttl
        self._pending: dict[str, _Pending] = {}
        self._records: list[UploadRecord] = []

    def install(self, router: Router) -> None:
        """Add the file-upload routes to ``router``."""
        router.add("POST", "/devices/{device_id}/files", self._storage_info)
        router.add("POST", "/devices/{device_id}/files/notifications", self._notification)

    def records(self, device_id: str | None = None) -> list[UploadRecord]:
        """Notified uploads, oldest first, of one device or all."""
        return [record for record in self._records if device_id is None or record.device_id == device_id]

    def blob_url(self, blob_name: str) -> str:
        """The blob's URL without a SAS."""
        return blob_url(self.storage.host_name, self.storage.container, blob_name)

    def _purge(self) -> None:
        now = time.monotonic()
        for correlation_id in [key for key, pending in self._pending.items() if pending.expires_at <= now]:
            del self._pending[correlation_id]

    def _device_request(self, request: HttpRequest) -> tuple[str, dict[str, Any]]:
        """The device a request names, authenticated as that device, and its JSON object body."""
        device_id = request.params["device_id"]
        authenticate(self._hub, request, device_id)
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object", error_code=400004)
        return device_id, body

    async def _storage_info(self, request: HttpRequest) -> HttpResponse:
        device_id, body = self._device_request(request)
        name = _field(body, "blobName", str, "a storage-info request")
        blob_name = f"{device_id}/{name}"
        if not name or len(blob_name) > _MAX_BLOB_NAME or name.endswith(("/", ".")) or "\\" in name:
            raise HttpError(400, f"blobName {name!r} is not a valid blob name", error_code=400004)
        self._purge()
        if sum(pending.device_id == device_id for pending in self._pending.values()) >= MAX_UPLOADS_IN_PROGRESS:
            raise HttpError(
                429, f"{device_id!r} already has {MAX_UPLOADS_IN_PROGRESS} uploads in progress", error_code=429001
            )
        correlation_id = secrets.token_urlsafe(24)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self._sas_ttl)
        self._pending[correlation_id] = _Pending(device_id, blob_name, time.monotonic() + self._sas_ttl)
        return HttpResponse.json(
            200,
            {
                "correlationId": correlation_id,
                "hostName": self.storage.host_name,
                "containerName": self.storage.container,
                "blobName": blob_name,
                "sasToken": self.storage.sas_token(blob_name, expiry),
            },
        )

    async def _notification(self, request: HttpRequest) -> HttpResponse:
        device_id, body = self._device_request(request)
        correlation_id = _field(body, "correlationId", str, "an upload notification")
        is_success = _field(body, "isSuccess", bool, "an upload notification")
        status_code = _field(body, "statusCode", int, "an upload notification")
        description = body.get("statusDescription") or ""
        if not isinstance(description, str):
            raise HttpError(400, "statusDescription must be a string", error_code=400004)
        self._purge()
        pending = self._pending.get(correlation_id)
        if pending is None or pending.device_id != device_id:
            raise HttpError(400, f"unknown or expired correlationId {correlation_id!r}", error_code=400002)
        del self._pending[correlation_id]
        record = UploadRecord(
            device_id=device_id,
            blob_name=pending.blob_name,
            container=self.storage.container,
            blob_url=self.blob_url(pending.blob_name),
            correlation_id=correlation_id,
            is_success=is_success,
            status_code=status_code,
            status_description=description,
            notified_at=datetime.datetime.now(datetime.UTC),
        )
        self._records.append(record)
        if is_success:
            await self._announce(record)
        return HttpResponse(204)

    async def _announce(self, record: UploadRecord) -> None:
        # IoT Hub notifies only of blobs that exist: a device claiming success for a blob it never
        # wrote gets its 204 but no notification.
        try:
            size = await self.storage.size(record.blob_name)
        except (LookupError, OSError, KeyError, ValueError, httpx.HTTPError) as exc:
            logger.info("no file notification for %r: %s", record.blob_name, exc)
            return
        self._hub.core.file_notifications.put(
            FileNotification(
                device_id=record.device_id,
                blob_uri=record.blob_url,
                blob_name=record.blob_name,
                last_updated_time=record.notified_at,
                blob_size_in_bytes=size,
                enqueued_time=record.notified_at,
            )
        )
