"""File upload: ask the hub for a blob SAS, upload to Azure Storage, tell the hub how it went.

Theory of operation
-------------------
:func:`upload_file` opens the source first (a bad argument or a missing file fails before the hub
is asked for anything), then asks the hub for storage (:func:`get_storage_info`), uploads, and
always notifies the hub (:func:`notify_upload_status`): success with the storage's status, or
failure -- a storage error, an exhausted retry, a failing source, or cancellation (the failure
notice is sent in a shielded, bounded scope, then the cancellation goes on).

The upload reads the source one chunk at a time. If the whole source fits in one chunk it goes as a
single ``Put Blob``; otherwise each chunk is a ``Put Block`` sent by up to ``concurrency`` tasks at
once, and ``Put Block List`` commits them. A slot is taken before a chunk is read and given back
when its block is stored, so at most ``concurrency + 1`` chunks are in memory whatever the size of
the file. Each storage request is retried with exponential back-off and jitter on 408, 429, 5xx and
transport failures; other statuses (403 for a bad SAS, say) fail at once.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, TypeAlias
from urllib.parse import quote_plus

import anyio
import httpx

from aioiothub._https.http import (
    HttpSettings,
    HubHttp,
    proxy_url,
    raise_for_status,
    storage_ssl_context,
    translate_errors,
)
from aioiothub.exceptions import ConnectError, ConnectionLostError, ProtocolError, ServiceError, unwrap_group
from aioiothub.options import ReconnectPolicy, require_positive_int
from aioiothub.protocol.blob import STORAGE_VERSION, blob_url, block_id, block_list_xml
from aioiothub.protocol.sas import check_text

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONCURRENCY",
    "BlobStorageInfo",
    "ProgressCallback",
    "UploadSource",
    "get_storage_info",
    "notify_upload_status",
    "upload_file",
]

_log = logging.getLogger("aioiothub")

DEFAULT_CHUNK_SIZE: Final = 4 * 1024 * 1024
DEFAULT_CONCURRENCY: Final = 4
_MAX_CHUNK_SIZE: Final = 100 * 1024 * 1024
_RETRY: Final = ReconnectPolicy(initial_delay=0.5, max_delay=8.0, max_attempts=5)
_RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_MAX_DESCRIPTION: Final = 256

UploadSource: TypeAlias = "bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | AsyncIterable[bytes]"
ProgressCallback: TypeAlias = Callable[[int, int | None], "Awaitable[None] | None"]


@dataclass(frozen=True, slots=True)
class BlobStorageInfo:
    """Where to upload a file, as the hub answered ``get_storage_info_for_blob``.

    Attributes:
        correlation_id: names this upload in :meth:`notify_blob_upload_status`.
        host_name: the storage endpoint's host (with any port and path prefix).
        container_name: the container.
        blob_name: the blob, ``{deviceId}/{name}``.
        sas_token: the SAS query string, starting with ``?`` (redacted in the repr).
    """

    correlation_id: str
    host_name: str
    container_name: str
    blob_name: str
    sas_token: str

    @property
    def sas_url(self) -> str:
        """The blob's URL with its SAS, for any storage client (e.g. ``BlobClient.from_blob_url``)."""
        return blob_url(self.host_name, self.container_name, self.blob_name, self.sas_token)

    @classmethod
    def from_json(cls, answer: Any) -> BlobStorageInfo:
        """Read the hub's answer.

        Raises:
            ProtocolError: a field is missing or not a string.
        """
        if not isinstance(answer, dict):
            raise ProtocolError("the storage-info answer is not a JSON object")
        values = []
        for name in ("correlationId", "hostName", "containerName", "blobName", "sasToken"):
            value = answer.get(name)
            if not isinstance(value, str) or not value:
                raise ProtocolError(f"the storage-info answer has no {name!r}")
            values.append(value)
        return cls(*values)

    def __repr__(self) -> str:
        return (
            f"BlobStorageInfo(correlation_id={self.correlation_id!r}, host_name={self.host_name!r}, "
            f"container_name={self.container_name!r}, blob_name={self.blob_name!r}, sas_token='<redacted>')"
        )


def _device_path(settings: HttpSettings, suffix: str) -> str:
    if settings.module_id is not None:
        raise RuntimeError("file upload is for device clients")
    return f"/devices/{quote_plus(settings.device_id)}{suffix}"


async def get_storage_info(settings: HttpSettings, blob_name: str) -> BlobStorageInfo:
    """``POST /devices/{id}/files``: a blob name and SAS for uploading ``blob_name``."""
    check_text(blob_name, "blob_name")
    async with HubHttp(settings) as http:
        answer = await http.post_json(
            _device_path(settings, "/files"), {"blobName": blob_name}, what="get_storage_info_for_blob"
        )
    return BlobStorageInfo.from_json(answer)


async def notify_upload_status(
    settings: HttpSettings, correlation_id: str, is_success: bool, status_code: int, status_description: str
) -> None:
    """``POST /devices/{id}/files/notifications``: tell the hub how the upload went."""
    check_text(correlation_id, "correlation_id")
    if not isinstance(is_success, bool):
        raise TypeError(f"is_success must be a bool, not {type(is_success).__name__}")
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise TypeError(f"status_code must be an int, not {type(status_code).__name__}")
    if not isinstance(status_description, str):
        raise TypeError(f"status_description must be a str, not {type(status_description).__name__}")
    body = {
        "correlationId": correlation_id,
        "isSuccess": is_success,
        "statusCode": status_code,
        "statusDescription": status_description,
    }
    async with HubHttp(settings) as http:
        await http.post_json(
            _device_path(settings, "/files/notifications"),
            body,
            what="notify_blob_upload_status",
            content_type="application/json; charset=utf-8",
        )


# --- reading the source ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Source:
    chunks: AsyncIterator[bytes]
    size: int | None


def _check_bytes(item: object) -> bytes:
    if not isinstance(item, bytes | bytearray | memoryview):
        raise TypeError(f"source produced {type(item).__name__}, not bytes")
    return bytes(item)


async def _rechunk(items: AsyncIterable[Any], chunk_size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for item in items:
        buffer += _check_bytes(item)
        while len(buffer) >= chunk_size:
            yield bytes(buffer[:chunk_size])
            del buffer[:chunk_size]
    if buffer:
        yield bytes(buffer)


async def _read_file_object(file: Any, chunk_size: int) -> AsyncIterator[bytes]:
    read = file.read
    while True:
        if inspect.iscoroutinefunction(read):
            data = await read(chunk_size)
        else:
            data = await anyio.to_thread.run_sync(read, chunk_size)
        if not data:
            return
        yield _check_bytes(data)


def _file_object_size(file: Any) -> int | None:
    try:
        size: int = os.fstat(file.fileno()).st_size - file.tell()
        return size
    except (AttributeError, OSError, ValueError):
        return None


@asynccontextmanager
async def _open_source(source: object, chunk_size: int) -> AsyncIterator[_Source]:
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")

        async def slices() -> AsyncIterator[bytes]:
            for start in range(0, len(view), chunk_size):
                yield bytes(view[start : start + chunk_size])

        yield _Source(slices(), len(view))
    elif isinstance(source, str | os.PathLike):
        path = anyio.Path(os.fspath(source))
        async with await anyio.open_file(path, "rb") as file:
            size = (await path.stat()).st_size
            yield _Source(_read_file_object(file, chunk_size), size)
    elif callable(getattr(source, "read", None)):
        yield _Source(_read_file_object(source, chunk_size), _file_object_size(source))
    elif isinstance(source, AsyncIterable):
        yield _Source(_rechunk(source, chunk_size), None)
    else:
        raise TypeError(
            "source must be bytes, a path, a binary file object or an async iterable of bytes, "
            f"not {type(source).__name__}"
        )


# --- talking to storage ---------------------------------------------------------------------------


def _retryable(error: BaseException) -> bool:
    if isinstance(error, ServiceError):
        return error.status in _RETRYABLE_STATUS
    return isinstance(error, TimeoutError | ConnectionLostError | ConnectError)


class _Storage:
    """PUTs to one blob, each retried with back-off."""

    def __init__(self, client: httpx.AsyncClient, info: BlobStorageInfo, timeout: float, content_type: str) -> None:
        self._client = client
        self._url = info.sas_url
        self._timeout = timeout
        self._content_type = content_type
        self.last_status = 0

    async def _put(self, what: str, query: dict[str, str], content: bytes, headers: dict[str, str]) -> None:
        url = httpx.URL(self._url).copy_merge_params(query)
        attempt = 0
        while True:
            try:
                with translate_errors(what, self._timeout), anyio.fail_after(self._timeout):
                    response = await self._client.put(
                        url, content=content, headers={"x-ms-version": STORAGE_VERSION, **headers}
                    )
                raise_for_status(response, what)
                self.last_status = response.status_code
                return
            except Exception as exc:
                attempt += 1
                if not _retryable(exc) or _RETRY.gives_up_after(attempt):
                    raise
                delay = _RETRY.delay(attempt - 1)
                _log.info("%s failed (%s); retry %d in %.1f s", what, exc, attempt, delay)
                await anyio.sleep(delay)

    async def put_blob(self, data: bytes) -> None:
        headers = {"x-ms-blob-type": "BlockBlob", "x-ms-blob-content-type": self._content_type}
        await self._put("Put Blob", {}, data, headers)

    async def put_block(self, index: int, data: bytes) -> str:
        identifier = block_id(index)
        await self._put(f"Put Block {index}", {"comp": "block", "blockid": identifier}, data, {})
        return identifier

    async def put_block_list(self, identifiers: list[str]) -> None:
        headers = {"Content-Type": "application/xml", "x-ms-blob-content-type": self._content_type}
        await self._put("Put Block List", {"comp": "blocklist"}, block_list_xml(identifiers), headers)


async def _report(progress: ProgressCallback | None, done: int, total: int | None) -> None:
    if progress is not None:
        result = progress(done, total)
        if inspect.isawaitable(result):
            await result


async def _upload(
    storage: _Storage, source: _Source, concurrency: int, progress: ProgressCallback | None
) -> int:
    """Upload everything the source yields; returns the number of bytes."""
    chunks = source.chunks
    first = await anext(chunks, b"")
    second = await anext(chunks, None)
    if second is None:
        await storage.put_blob(first)
        await _report(progress, len(first), source.size)
        return len(first)
    slots = anyio.Semaphore(concurrency)
    identifiers: list[str] = []
    done = 0

    async def put(index: int, data: bytes) -> None:
        nonlocal done
        try:
            identifiers[index] = await storage.put_block(index, data)
            done += len(data)
            await _report(progress, done, source.size)
        finally:
            slots.release()

    try:
        async with anyio.create_task_group() as tasks:
            pending: list[bytes | None] = [first, second]
            while True:
                await slots.acquire()
                data = pending.pop(0) if pending else await anext(chunks, None)
                if data is None:
                    slots.release()
                    break
                identifiers.append("")
                index = len(identifiers) - 1
                block_id(index)  # more blocks than a blob takes: fail before uploading it
                tasks.start_soon(put, index, data, name=f"aioiothub Put Block {index}")
                data = None
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    await storage.put_block_list(identifiers)
    return done


def _failure(error: BaseException) -> tuple[int, str]:
    if isinstance(error, anyio.get_cancelled_exc_class()):
        return 500, "the upload was cancelled"
    status = error.status if isinstance(error, ServiceError) else 500
    return status, f"{type(error).__name__}: {error}"[:_MAX_DESCRIPTION]


async def upload_file(
    settings: HttpSettings,
    blob_name: str,
    source: object,
    *,
    content_type: str | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> None:
    """Upload ``source`` as blob ``blob_name`` and notify the hub; see the module docstring."""
    check_text(blob_name, "blob_name")
    if content_type is not None:
        check_text(content_type, "content_type")
    if progress is not None and not callable(progress):
        raise TypeError("progress must be callable or None")
    require_positive_int(chunk_size, "chunk_size", maximum=_MAX_CHUNK_SIZE)
    require_positive_int(concurrency, "concurrency", maximum=64)
    async with _open_source(source, chunk_size) as opened:
        info = await get_storage_info(settings, blob_name)
        try:
            async with httpx.AsyncClient(
                verify=storage_ssl_context(settings.ssl_context),
                proxy=proxy_url(settings.proxy),
                timeout=settings.timeout,
                trust_env=False,
                headers={"User-Agent": settings.user_agent},
            ) as client:
                storage = _Storage(client, info, settings.timeout, content_type or "application/octet-stream")
                size = await _upload(storage, opened, concurrency, progress)
        except BaseException as exc:
            status, description = _failure(exc)
            with anyio.CancelScope(shield=True), anyio.move_on_after(settings.timeout):
                try:
                    await notify_upload_status(settings, info.correlation_id, False, status, description)
                except Exception as notify_error:
                    _log.warning("could not notify the hub that upload %r failed: %s", info.blob_name, notify_error)
            raise
    await notify_upload_status(
        settings, info.correlation_id, True, storage.last_status, f"uploaded {size} bytes"
    )
