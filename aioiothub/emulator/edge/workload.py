"""The IoT Edge workload API on a Unix socket: the trust bundle and signing with a module's key.

A module never holds its key: it asks the workload API of its Edge device to sign the SAS string,
``POST /modules/{moduleId}/genid/{generationId}/sign?api-version=…`` with
``{"keyId":"primary","algo":"HMACSHA256","data":"<base64 of the text>"}`` answered
``{"digest":"<base64 HMAC-SHA256>"}``, and for the certificate that edgeHub's TLS chains to,
``GET /trust-bundle?api-version=…`` answered ``{"certificate":"<PEM>"}``. A module that is not
registered with this workload, or whose generation id is stale, gets 404; a malformed request 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

import anyio
import anyio.abc

from aioiothub.emulator.rest.https import HttpError, HttpRequest, HttpResponse, Router, serve_http

__all__ = ["WorkloadApi"]

logger = logging.getLogger("aioiothub.emulator")

_MAX_SIGN_DATA: Final = 64 * 1024


def _workload_error(status: int, message: str) -> HttpError:
    return HttpError(status, message, response=HttpResponse.json(status, {"message": message}))


class WorkloadApi:
    """The workload API of one emulated Edge device.

    Args:
        trust_bundle: the PEM the trust-bundle call returns (the emulator's CA).
        module_key: returns the primary or secondary key of a module (``None`` if unknown).
    """

    def __init__(self, trust_bundle: bytes, module_key: Callable[[str, str], str | None]) -> None:
        self._trust_bundle = trust_bundle.decode("ascii")
        self._module_key = module_key
        self._generations: dict[str, str] = {}
        self.router = Router()
        self.router.add("GET", "/trust-bundle", self._get_trust_bundle)
        self.router.add("POST", "/modules/{module_id}/genid/{generation_id}/sign", self._sign)

    def register(self, module_id: str, generation_id: str) -> None:
        """Let ``module_id`` sign with generation ``generation_id`` (a newer one replaces the old)."""
        self._generations[module_id] = generation_id

    @staticmethod
    def _require_api_version(request: HttpRequest) -> None:
        if not request.query.get("api-version"):
            raise _workload_error(400, "the api-version query parameter is required")

    async def _get_trust_bundle(self, request: HttpRequest) -> HttpResponse:
        self._require_api_version(request)
        return HttpResponse.json(200, {"certificate": self._trust_bundle})

    async def _sign(self, request: HttpRequest) -> HttpResponse:
        self._require_api_version(request)
        module_id = request.params["module_id"]
        if self._generations.get(module_id) != request.params["generation_id"]:
            raise _workload_error(404, f"module {module_id!r} with this generation id not found")
        body = request.json()
        if not isinstance(body, dict):
            raise _workload_error(400, "the body must be a JSON object")
        key_id, algorithm, data = body.get("keyId"), body.get("algo"), body.get("data")
        if key_id not in ("primary", "secondary"):
            raise _workload_error(400, f"keyId must be 'primary' or 'secondary', got {key_id!r}")
        if algorithm != "HMACSHA256":
            raise _workload_error(400, f"algo must be 'HMACSHA256', got {algorithm!r}")
        if not isinstance(data, str) or len(data) > _MAX_SIGN_DATA:
            raise _workload_error(400, "data must be a base64 string")
        try:
            message = base64.b64decode(data, validate=True)
        except (ValueError, binascii.Error):
            raise _workload_error(400, "data is not valid base64") from None
        key = self._module_key(module_id, key_id)
        if key is None:
            raise _workload_error(404, f"module {module_id!r} has no {key_id} key")
        digest = hmac.new(base64.b64decode(key), message, hashlib.sha256).digest()
        return HttpResponse.json(200, {"digest": base64.b64encode(digest).decode("ascii")})

    async def serve(self, path: Path, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen on the Unix socket ``path`` until cancelled; the socket file is removed afterwards."""
        listener = await anyio.create_unix_listener(path)

        async def handle(stream: anyio.abc.SocketStream) -> None:
            try:
                await serve_http(stream, None, self.router)
            except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError, OSError) as exc:
                logger.debug("workload API connection ended: %r", exc)
            finally:
                await stream.aclose()

        try:
            async with listener, anyio.create_task_group() as connections:
                task_status.started()
                await listener.serve(handle, connections)
        finally:
            path.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink of a local socket file
