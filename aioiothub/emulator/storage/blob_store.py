"""A minimal Azure Blob endpoint in memory: where devices upload files by default.

It serves, path-style (``https://host:port/{container}/{blob}``), the block blob calls a file upload
needs: Put Blob, Put Block, Put Block List and Get Blob (with ``Range``/``x-ms-range``), each
authorised by a service SAS for that blob signed with the store's account key (403
``AuthenticationFailed`` otherwise, as Azure Storage answers). Uncommitted blocks live with their
blob until Put Block List commits them or the blob is written whole. Errors are Azure's XML
``<Error><Code>…</Code><Message>…</Message></Error>`` with the code also in ``x-ms-error-code``.

Fault injection: :meth:`BlobStore.fail_requests` answers the next requests with a 5xx, to exercise
a client's retries.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import re
import secrets
import uuid
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Final
from xml.sax.saxutils import escape

from aioiothub.emulator.rest.https import HttpError, HttpRequest, HttpResponse, Router
from aioiothub.emulator.storage.blob_sas import SAS_VERSION, blob_sas_signature

__all__ = ["ACCOUNT_NAME", "MAX_BLOCK_BYTES", "Blob", "BlobStore"]

ACCOUNT_NAME: Final = "aioiothubemulator"
MAX_BLOCK_BYTES: Final = 100 * 1024 * 1024
"""The largest body the store takes in one Put Blob or Put Block (Azure allows more)."""
_MAX_BLOCK_LIST_BYTES: Final = 8 * 1024 * 1024
_MAX_UNCOMMITTED_BLOCKS: Final = 100_000
_MAX_BLOCK_ID_BYTES: Final = 64
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def _storage_error(status: int, code: str, message: str) -> HttpError:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}\nRequestId:{uuid.uuid4()}</Message></Error>"
    ).encode()
    response = HttpResponse(
        status, body, (("Content-Type", "application/xml"), ("x-ms-error-code", code), ("x-ms-version", SAS_VERSION))
    )
    return HttpError(status, f"{code}: {message}", response=response)


@dataclass(slots=True, eq=False)
class Blob:
    """A committed block blob."""

    data: bytes
    content_type: str
    etag: str
    last_modified: datetime.datetime


@dataclass(slots=True, eq=False)
class _Staging:
    blocks: dict[str, bytes] = field(default_factory=dict)
    id_length: int | None = None


class BlobStore:
    """Containers of block blobs in memory, behind a SAS-checking HTTP router.

    Args:
        account_key: the key SAS tokens are signed with; random when ``None``.
    """

    def __init__(self, account_key: str | None = None) -> None:
        self.account_name = ACCOUNT_NAME
        self.account_key = account_key or base64.b64encode(secrets.token_bytes(64)).decode("ascii")
        self._containers: dict[str, dict[str, Blob]] = {}
        self._staging: dict[tuple[str, str], _Staging] = {}
        self._failures: list[int] = []
        self.router = Router()
        self.router.add("PUT", "/{container}/{blob:path}", self._put, max_body=MAX_BLOCK_BYTES)
        self.router.add("GET", "/{container}/{blob:path}", self._get)

    # --- direct access (the emulator's own API) ------------------------------------------------

    def create_container(self, container: str) -> None:
        """Create ``container`` if it does not exist."""
        self._containers.setdefault(container, {})

    def blob(self, container: str, name: str) -> Blob | None:
        """The committed blob, or ``None``."""
        return self._containers.get(container, {}).get(name)

    def fail_requests(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (a 5xx) before looking at them."""
        if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
            raise ValueError(f"status must be a 5xx status, got {status!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an int >= 0, got {count!r}")
        self._failures = [status] * count

    # --- HTTP ------------------------------------------------------------------------------------

    def _authorize(self, request: HttpRequest, container: str, blob: str, permission: str) -> None:
        query = request.query
        try:
            version, resource, permissions, expiry, signature = (
                query["sv"], query["sr"], query["sp"], query["se"], query["sig"]
            )
        except KeyError as exc:
            raise _storage_error(403, "AuthenticationFailed", f"the SAS has no {exc.args[0]}") from None
        if resource != "b":
            raise _storage_error(403, "AuthenticationFailed", f"the SAS is for resource {resource!r}, not a blob")
        expected = blob_sas_signature(
            self.account_key,
            account=self.account_name,
            container=container,
            blob=blob,
            permissions=permissions,
            expiry=expiry,
            version=version,
            start=query.get("st", ""),
            protocol=query.get("spr", ""),
        )
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise _storage_error(403, "AuthenticationFailed", "Signature did not match")
        try:
            expires = datetime.datetime.fromisoformat(expiry)
        except ValueError:
            raise _storage_error(403, "AuthenticationFailed", f"se {expiry!r} is not a time") from None
        if expires <= datetime.datetime.now(datetime.UTC):
            raise _storage_error(403, "AuthenticationFailed", "Signed expiry time has passed")
        if permission not in permissions:
            raise _storage_error(403, "AuthorizationPermissionMismatch", f"the SAS does not grant {permission!r}")

    def _common(self, request: HttpRequest, permission: str) -> tuple[str, str]:
        if self._failures:
            status = self._failures.pop()
            raise _storage_error(status, "ServerBusy", "injected failure")
        container, blob = request.params["container"], request.params["blob"]
        self._authorize(request, container, blob, permission)
        if container not in self._containers:
            raise _storage_error(404, "ContainerNotFound", f"The specified container {container!r} does not exist.")
        return container, blob

    def _created(self, blob: Blob | None = None) -> HttpResponse:
        headers = [("x-ms-version", SAS_VERSION), ("x-ms-request-id", str(uuid.uuid4()))]
        if blob is not None:
            headers += [
                ("ETag", blob.etag),
                ("Last-Modified", format_datetime(blob.last_modified, usegmt=True)),
                ("Content-MD5", base64.b64encode(hashlib.md5(blob.data).digest()).decode()),
            ]
        headers.append(("x-ms-request-server-encrypted", "false"))
        return HttpResponse(201, b"", headers)

    def _commit(self, request: HttpRequest, container: str, name: str, data: bytes) -> Blob:
        blobs = self._containers[container]
        if request.headers.get("if-none-match") == "*" and name in blobs:
            raise _storage_error(409, "BlobAlreadyExists", "The specified blob already exists.")
        content_type = request.headers.get("x-ms-blob-content-type") or "application/octet-stream"
        blob = Blob(data, content_type, f'"0x{secrets.token_hex(8).upper()}"', datetime.datetime.now(datetime.UTC))
        blobs[name] = blob
        self._staging.pop((container, name), None)
        return blob

    async def _put(self, request: HttpRequest) -> HttpResponse:
        container, name = self._common(request, "w")
        operation = request.query.get("comp")
        if operation is None:
            if request.headers.get("x-ms-blob-type") != "BlockBlob":
                raise _storage_error(400, "InvalidHeaderValue", "x-ms-blob-type must be BlockBlob")
            return self._created(self._commit(request, container, name, request.body))
        if operation == "block":
            self._put_block(container, name, request.query.get("blockid", ""), request.body)
            return self._created()
        if operation == "blocklist":
            return self._created(self._commit(request, container, name, self._assemble(container, name, request)))
        raise _storage_error(400, "InvalidQueryParameterValue", f"comp={operation!r} is not supported")

    def _put_block(self, container: str, name: str, block_id: str, data: bytes) -> None:
        try:
            raw = base64.b64decode(block_id, validate=True)
        except (ValueError, binascii.Error):
            raise _storage_error(400, "InvalidQueryParameterValue", "blockid is not base64") from None
        if not raw or len(raw) > _MAX_BLOCK_ID_BYTES:
            raise _storage_error(400, "InvalidQueryParameterValue", "blockid must be 1 to 64 bytes")
        staging = self._staging.setdefault((container, name), _Staging())
        if staging.id_length is None:
            staging.id_length = len(block_id)
        elif staging.id_length != len(block_id):
            raise _storage_error(400, "InvalidBlobOrBlock", "block ids of one blob must have the same length")
        if block_id not in staging.blocks and len(staging.blocks) >= _MAX_UNCOMMITTED_BLOCKS:
            raise _storage_error(409, "BlockCountExceedsLimit", "too many uncommitted blocks")
        staging.blocks[block_id] = data

    def _assemble(self, container: str, name: str, request: HttpRequest) -> bytes:
        body = request.body
        if len(body) > _MAX_BLOCK_LIST_BYTES or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise _storage_error(400, "InvalidXmlDocument", "the block list is too large or declares entities")
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise _storage_error(400, "InvalidXmlDocument", f"the block list is not XML: {exc}") from None
        if root.tag != "BlockList":
            raise _storage_error(400, "InvalidXmlDocument", "the root element must be BlockList")
        staged = self._staging.get((container, name), _Staging()).blocks
        committed = self.blob(container, name)
        parts: list[bytes] = []
        for element in root:
            block_id = element.text or ""
            if element.tag not in ("Latest", "Uncommitted", "Committed"):
                raise _storage_error(400, "InvalidXmlDocument", f"unknown element {element.tag!r}")
            if element.tag != "Committed" and block_id in staged:
                parts.append(staged[block_id])
            elif element.tag == "Committed" and committed is not None:
                raise _storage_error(400, "InvalidBlockList", "committed blocks are not kept by this store")
            else:
                raise _storage_error(400, "InvalidBlockList", f"block {block_id!r} was not uploaded")
        return b"".join(parts)

    async def _get(self, request: HttpRequest) -> HttpResponse:
        container, name = self._common(request, "r")
        blob = self.blob(container, name)
        if blob is None:
            raise _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        headers = [
            ("Content-Type", blob.content_type),
            ("ETag", blob.etag),
            ("Last-Modified", format_datetime(blob.last_modified, usegmt=True)),
            ("x-ms-blob-type", "BlockBlob"),
            ("x-ms-version", SAS_VERSION),
            ("Accept-Ranges", "bytes"),
        ]
        wanted = request.headers.get("x-ms-range") or request.headers.get("range")
        if wanted is None:
            return HttpResponse(200, blob.data, headers)
        match = _RANGE.match(wanted.strip())
        if match is None:
            raise _storage_error(400, "InvalidRange", f"unsupported range {wanted!r}")
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else len(blob.data) - 1, len(blob.data) - 1)
        if start >= len(blob.data) or start > end:
            raise _storage_error(416, "InvalidRange", "The range is invalid for the current size of the resource.")
        headers.append(("Content-Range", f"bytes {start}-{end}/{len(blob.data)}"))
        return HttpResponse(206, blob.data[start : end + 1], headers)
