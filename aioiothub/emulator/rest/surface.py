"""The emulator's HTTPS side: the hub's REST routes, upload storage, and emulated Edge devices.

:class:`HttpsSurface` is what :class:`~aioiothub.emulator.server.Emulator` plugs into its port-443
listener (REST requests beside the MQTT WebSocket upgrade), plus the listeners and sockets that go
with it: the embedded blob endpoint (its own TLS port) or an external storage account, and one
workload API socket per Edge device. More REST routes (the service API) are added to
:attr:`HttpsSurface.router`.
"""

from __future__ import annotations

import functools
import os
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc

from aioiothub.emulator import run_files
from aioiothub.emulator.edge.edge_hub import EdgeDevice, EdgeEnvironment
from aioiothub.emulator.edge.edge_methods import install_edge_methods
from aioiothub.emulator.hub import Hub
from aioiothub.emulator.listeners import PeerInfo, UpgradeRequest, serve_tls
from aioiothub.emulator.rest.file_upload import FileUploads, UploadRecord
from aioiothub.emulator.rest.https import HttpError, HttpRequest, Router, serve_http
from aioiothub.emulator.storage.blob_store import BlobStore
from aioiothub.emulator.storage.upload_storage import EmbeddedStorage, ExternalStorage
from aioiothub.protocol.connection_string import ConnectionString

__all__ = ["HttpsSurface", "public_host"]

_MAX_SOCKET_PATH = 100
_LOOPBACK = frozenset({"127.0.0.1", "::1", "0.0.0.0", "::", "localhost", ""})


def public_host(host: str) -> str:
    """The name clients use for a listen address: ``localhost`` for loopback and wildcard addresses."""
    if host in _LOOPBACK:
        return "localhost"
    return f"[{host}]" if ":" in host else host


class HttpsSurface:
    """REST routes, upload storage and Edge devices of one emulator.

    Args:
        hub: the hub behind the routes.
        blob_port: the embedded blob endpoint's port (0 picks a free one).
        storage_connection_string: an external storage account to upload to instead.
        storage_container: the upload container.
        upload_sas_ttl: lifetime of the SAS handed out for each upload, in seconds.
        state_dir: the emulator's state directory: the workload sockets go to its ``edge`` folder.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        blob_port: int,
        storage_connection_string: str | None,
        storage_container: str,
        upload_sas_ttl: float,
        state_dir: Path | None = None,
    ) -> None:
        if isinstance(blob_port, bool) or not isinstance(blob_port, int) or not 0 <= blob_port <= 65535:
            raise ValueError(f"blob_port must be an int between 0 and 65535, got {blob_port!r}")
        if not isinstance(storage_container, str) or not 3 <= len(storage_container) <= 63:
            raise ValueError(f"storage_container must be a name of 3 to 63 characters, got {storage_container!r}")
        self._hub = hub
        self._blob_port = blob_port
        self.router = Router()
        #: Checks service-side callers of the method routes (set with the service API).
        self.authorize_service: Callable[[HttpRequest], object] | None = None
        install_edge_methods(self.router, hub, authorize_service=self._authorize_service)
        self.blob_store: BlobStore | None = None
        self._storage: EmbeddedStorage | ExternalStorage
        if storage_connection_string is None:
            self.blob_store = BlobStore()
            self._storage = EmbeddedStorage(self.blob_store, storage_container)
        else:
            self._storage = ExternalStorage(storage_connection_string, storage_container)
        self.uploads = FileUploads(hub, self._storage, sas_ttl=upload_sas_ttl)
        self.uploads.install(self.router)
        self.blob_port: int | None = None
        self._edge_devices: dict[str, EdgeDevice] = {}
        self._state_dir = state_dir
        self._edge_directory: Path | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._trust_pem = b""

    def _authorize_service(self, request: HttpRequest) -> object:
        if self.authorize_service is None:
            raise HttpError(401, "only IoT Edge modules (x-ms-edge-moduleId) invoke methods here", error_code=401002)
        return self.authorize_service(request)

    async def start(
        self, task_group: anyio.abc.TaskGroup, *, host: str, server_context: ssl.SSLContext, trust_pem: bytes
    ) -> None:
        """Start the blob endpoint (or reach the storage account) in ``task_group``.

        Args:
            task_group: where listeners run; cancelling it stops them.
            host: the address to listen on.
            server_context: the emulator's TLS server context.
            trust_pem: the CA clients trust (also trusted for an external storage account).
        """
        self._task_group = task_group
        self._trust_pem = trust_pem
        if self.blob_store is not None:
            assert isinstance(self._storage, EmbeddedStorage)
            serve = functools.partial(self._serve_blob, self.blob_store.router)
            self.blob_port = await task_group.start(
                functools.partial(serve_tls, serve, host=host, port=self._blob_port, ssl_context=server_context),
                name=f"emulator blob endpoint on {host}:{self._blob_port}",
            )
            self._storage.endpoint = f"{public_host(host)}:{self.blob_port}"
        else:
            assert isinstance(self._storage, ExternalStorage)
            context = ssl.create_default_context()
            context.load_verify_locations(cadata=trust_pem.decode("ascii"))
            await self._storage.prepare(context)

    def stop(self) -> None:
        """Forget the running state and remove the workload sockets' directory."""
        if self._edge_directory is not None and self._state_dir is None:
            shutil.rmtree(self._edge_directory, ignore_errors=True)
        self._edge_directory = None
        self._edge_devices.clear()
        self._task_group = None
        self.blob_port = None

    async def handle_connection(self, stream: anyio.abc.ByteStream, peer: PeerInfo) -> UpgradeRequest | None:
        """Serve REST requests on a port-443 connection (see :data:`~aioiothub.emulator.listeners.HttpHandler`)."""
        return await serve_http(stream, peer, self.router)

    @staticmethod
    async def _serve_blob(router: Router, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        await serve_http(stream, peer, router)

    def _workload_directory(self) -> Path:
        if self._state_dir is not None:
            directory = self._state_dir / "edge"
            # A Unix socket path must fit in about 100 bytes; a deep state directory may not.
            if len(os.fsencode(directory / "workload-0000.sock")) <= _MAX_SOCKET_PATH:
                directory.mkdir(mode=0o700, exist_ok=True)
                return directory
        return run_files.temporary_directory("edge")

    async def read_upload(self, record: UploadRecord) -> bytes:
        """The content of an uploaded blob."""
        return await self._storage.read(record.blob_name)

    async def edge_environment(
        self,
        device_id: str,
        module_id: str,
        routes: list[str],
        *,
        gateway_hostname: str,
        ca_file: Path,
    ) -> EdgeEnvironment:
        """Register (if needed) and describe an Edge module; see :meth:`Emulator.edge_environment`."""
        if self._task_group is None:
            raise RuntimeError("edge environments exist only inside 'async with Emulator()'")
        hub = self._hub
        try:
            hub.identity(device_id)
        except ValueError:
            hub.add_device(device_id)
        try:
            identity = hub.identity(device_id, module_id)
        except ValueError:
            identity = hub.add_module(device_id, module_id)
        if identity.authentication != "sas":
            raise ValueError(f"module {device_id}/{module_id} must use SAS keys to sign through the workload API")
        device = self._edge_devices.get(device_id)
        if device is None:
            if self._edge_directory is None:
                self._edge_directory = self._workload_directory()
            socket_path = self._edge_directory / f"workload-{len(self._edge_devices)}.sock"
            device = EdgeDevice(hub, device_id, socket_path, self._trust_pem)
            device.add_routes(routes)
            await device.start(self._task_group)
            self._edge_devices[device_id] = device
        else:
            device.add_routes(routes)
        debug_connection_string = ConnectionString(
            host_name=hub.hostname,
            device_id=device_id,
            module_id=module_id,
            shared_access_key=identity.primary_key,
            gateway_host_name=gateway_hostname,
        )
        return device.environment(
            module_id,
            hub_hostname=hub.hostname,
            gateway_hostname=gateway_hostname,
            debug_variables={
                "EdgeHubConnectionString": debug_connection_string.to_text(reveal_secrets=True),
                "EdgeModuleCACertificateFile": str(ca_file),
            },
        )
