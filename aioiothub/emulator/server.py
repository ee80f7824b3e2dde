"""The emulator as a running server: the hub's state behind MQTT-over-TLS and WebSocket listeners.

:class:`Emulator` is a :class:`~aioiothub.emulator.hub.Hub` that, inside ``async with``, listens for
devices. Entering builds the TLS material (an ephemeral CA and a server certificate unless files are
given), writes the CA to a file for tools that want a path, and starts the listeners in a task group
the emulator owns; every connection's task lives under it. Leaving closes every connection, stops
the listeners and removes the CA file, so nothing outlives the ``async with`` block.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.abc

from aioiothub.emulator import run_files
from aioiothub.emulator.amqp.surface import AmqpPort, AmqpSurface
from aioiothub.emulator.certs import (
    CertificateAuthority,
    client_ssl_context,
    server_tls_material,
    trust_client_certificate,
)
from aioiothub.emulator.edge.edge_hub import EdgeEnvironment
from aioiothub.emulator.hub import Hub
from aioiothub.emulator.hub.management import restore_state
from aioiothub.emulator.hub.notifications import DEFAULT_EVENT_SOURCES
from aioiothub.emulator.listeners import PeerInfo, serve_tls, serve_websocket
from aioiothub.emulator.mqtt import serve_mqtt
from aioiothub.emulator.rest.file_upload import UploadRecord
from aioiothub.emulator.rest.surface import HttpsSurface, public_host
from aioiothub.emulator.service_api import (
    SharedAccessPolicy,
    generated_policies,
    install_service_api,
    policy_connection_string,
)
from aioiothub.emulator.storage.blob_store import BlobStore
from aioiothub.emulator.storage.state_store import StateStore, load_certificate_authority
from aioiothub.emulator.traffic import TrafficLog
from aioiothub.protocol.connect import WEBSOCKET_PORT

__all__ = ["Emulator"]

_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")

# An in-memory connection is served as a TLS one whose client presented no certificate.
_MEMORY_PEER = PeerInfo(remote_address="memory", transport="memory", client_certificate_der=None)


class Emulator(Hub):
    """A local Azure IoT Hub: MQTT over TLS (and WebSocket), with the hub's rules and a service API.

    Example:
        >>> async with Emulator() as hub:  # doctest: +SKIP
        ...     device = hub.add_device("dev1")
        ...     # connect a device with device.connection_string, port=hub.port,
        ...     # ssl_context=hub.client_ssl_context(), then:
        ...     await hub.update_desired("dev1", {"interval": 5})
        ...     result = await hub.invoke_method("dev1", "reboot", {"delay": 1}, timeout=5)

    Args:
        hostname: the hub's host name: what devices put in the username and SAS scope, and a name
            in the server certificate.
        host: the address to listen on.
        port: the MQTT-over-TLS port; 0 picks a free one (see :attr:`port`).
        websocket_port: the MQTT-over-WebSocket port (path ``/$iothub/websocket``); 0 picks a free
            one, ``None`` disables the WebSocket listener.
        certfile: a PEM server certificate (chain) to use instead of an ephemeral one; clients must
            then trust its issuer, and :attr:`ca_pem` holds this file's content.
        keyfile: the private key of ``certfile``.
        telemetry_limit: how many telemetry messages to keep.
        blob_port: the port of the embedded blob endpoint devices upload files to; 0 picks a free one.
        storage_connection_string: upload to this storage account (Azure Storage, or Azurite with
            HTTPS) instead of the embedded blob endpoint; the emulator signs the SAS tokens.
        storage_container: the container uploads go to (created when missing).
        certificate_authority: the CA for the emulator's certificates; generated when ``None``
            (or kept in ``state_dir``).
        policies: the shared access policies of IoT Hub's service REST API (served on the
            WebSocket port); the five standard ones with random keys when ``None``.
        state_dir: keep identities, twins, queued cloud-to-device messages, the CA and the built-in
            endpoint's events in this directory, and start from what it holds
            (:mod:`~aioiothub.emulator.storage.state_store`, :mod:`~aioiothub.emulator.storage.event_store`); the CA
            file and the IoT Edge workload sockets live there too, at the same paths every start.
        log_traffic: write one line per MQTT or HTTP operation served to this (``--log-traffic``;
            :mod:`aioiothub.emulator.traffic`); never a key, token or signature.
        amqp_port: the AMQPS port of the cloud side (the Event Hubs-compatible endpoint):
            ``"auto"`` is 5671 when free (the only port azure-eventhub and uamqp use over TLS), else
            a free one; 0 a free one; ``None`` none.
        amqp_plain_port: a port for AMQP without TLS (``UseDevelopmentEmulator=true`` clients), or
            ``None`` (the default) for none.
        event_sources: the route data sources sent to the Event Hubs-compatible endpoint, by IoT Hub's
            names: ``"DeviceMessages"`` (the default, as a hub without routes), ``"TwinChangeEvents"``,
            ``"DeviceLifecycleEvents"`` (:mod:`aioiothub.emulator.hub.notifications`).
    """

    def __init__(
        self,
        *,
        hostname: str = "localhost",
        host: str = "127.0.0.1",
        port: int = 0,
        websocket_port: int | None = 0,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        telemetry_limit: int = 100_000,
        blob_port: int = 0,
        storage_connection_string: str | None = None,
        storage_container: str = "fileuploads",
        certificate_authority: CertificateAuthority | None = None,
        policies: Sequence[SharedAccessPolicy] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        log_traffic: Callable[[str], None] | None = None,
        amqp_port: AmqpPort = "auto",
        amqp_plain_port: AmqpPort = None,
        event_sources: Collection[str] = DEFAULT_EVENT_SOURCES,
    ) -> None:
        store = StateStore(state_dir) if state_dir is not None else None
        if store is not None and certificate_authority is None:
            certificate_authority = load_certificate_authority(store.directory)
        super().__init__(
            hostname=hostname, telemetry_limit=telemetry_limit, certificate_authority=certificate_authority,
            event_sources=event_sources,
        )
        self._store = store
        if store is not None:
            restore_state(self.core, store.load(self.hostname), store)
            store.events.restore(self.core.events)
        self._policies = list(policies) if policies is not None else generated_policies()
        if len({policy.name for policy in self._policies}) != len(self._policies):
            raise ValueError("policies: two policies have the same name")
        self._https = HttpsSurface(
            self,
            blob_port=blob_port,
            storage_connection_string=storage_connection_string,
            storage_container=storage_container,
            upload_sas_ttl=3600.0,
            state_dir=store.directory if store is not None else None,
        )
        self._https.authorize_service = install_service_api(
            self._https.router, self, self._policies, self._service_scopes
        )
        self._amqp = AmqpSurface(
            self.core, self._policies, hostname=self.hostname, event_hub_name=self.hostname.split(".")[0],
            tls_port=amqp_port, plain_port=amqp_plain_port,
        )
        if log_traffic is not None:
            traffic = self.core.traffic = TrafficLog(log_traffic)
            self._https.router.observer = traffic.http_answered
        for argument, value in (("port", port), ("websocket_port", 0 if websocket_port is None else websocket_port)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"{argument} must be an int between 0 and 65535, got {value!r}")
        if (certfile is None) != (keyfile is None):
            raise ValueError("certfile and keyfile must be given together")
        self._host = host
        self._requested_port = port
        self._requested_websocket_port = websocket_port
        self._certfile = certfile
        self._keyfile = keyfile
        self._server_context: ssl.SSLContext | None = None
        self._ca_pem: bytes | None = None
        self._ca_file: Path | None = None
        self._port: int | None = None
        self._websocket_port: int | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._exit_stack is not None:
            raise RuntimeError("the emulator is already running")
        context, ca_pem = self._tls_material()
        self_signed = [each.certificate_pem for each in self.identities() if each.authentication == "x509"]
        for certificate_pem in [*self_signed, *self.dps.trusted_certificates()]:
            if certificate_pem is not None:
                trust_client_certificate(context, certificate_pem)
        run_files.remove_stale()
        stack = contextlib.AsyncExitStack()
        try:
            self._ca_file = self._write_ca_file(ca_pem)
            stack.callback(self._remove_ca_file)
            if self._store is not None:  # called after the task group ends, with its last events in
                stack.callback(self._store.events.flush)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._task_group.cancel_scope.cancel)
            if self._store is not None:
                self._task_group.start_soon(self._store.events.run, name="emulator event log writer")
            stack.callback(self.core.close_all, "the emulator is shutting down")
            self._server_context = context
            self._ca_pem = ca_pem
            self._port = await self._task_group.start(
                functools.partial(
                    serve_tls, self._serve_connection, host=self._host, port=self._requested_port, ssl_context=context
                ),
                name=f"emulator TLS listener on {self._host}:{self._requested_port}",
            )
            if self._requested_websocket_port is not None:
                self._websocket_port = await self._task_group.start(
                    functools.partial(
                        serve_websocket,
                        self._serve_connection,
                        host=self._host,
                        port=self._requested_websocket_port,
                        ssl_context=context,
                        http_handler=self._https.handle_connection,
                    ),
                    name=f"emulator WebSocket listener on {self._host}:{self._requested_websocket_port}",
                )
            stack.callback(self._amqp.stop)
            await self._amqp.start(self._task_group, host=self._host, ssl_context=context)
            stack.callback(self._https.stop)
            await self._https.start(self._task_group, host=self._host, server_context=context, trust_pem=ca_pem)
        except BaseException:
            await stack.__aexit__(None, None, None)
            self._reset()
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        stack = self._exit_stack
        if stack is None:
            return None
        try:
            if isinstance(exc, Exception):
                # The caller's own error must come out as it is, not wrapped in an ExceptionGroup by
                # the task group: shut down as on a clean exit and let it propagate.
                await stack.__aexit__(None, None, None)
                return None
            return await stack.__aexit__(exc_type, exc, traceback)
        finally:
            self._reset()

    def _reset(self) -> None:
        self._exit_stack = None
        self._task_group = None
        self._server_context = None
        self._port = None
        self._websocket_port = None

    def _tls_material(self) -> tuple[ssl.SSLContext, bytes]:
        names = list(dict.fromkeys([self.hostname, *_LOCAL_NAMES, self._host]))
        return server_tls_material(self.certificate_authority, names, certfile=self._certfile, keyfile=self._keyfile)

    def _write_ca_file(self, ca_pem: bytes) -> Path:
        directory = self._store.directory if self._store is not None else None
        return run_files.ca_file(directory, ca_pem, own_certificate=self._certfile is not None)

    def _remove_ca_file(self) -> None:
        if self._ca_file is not None and self._store is None:
            run_files.remove(self._ca_file)
        self._ca_file = None

    async def _serve_connection(self, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        await serve_mqtt(self, stream, peer)

    async def serve_stream(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one MQTT connection, device or DPS, over an already open byte stream of raw MQTT.

        The stream is served exactly as a TLS connection is once its handshake is done, only without
        a socket, TLS or a client certificate: identities authenticate with SAS tokens. Returns when
        the connection ends, having closed the stream; whatever the client did, it returns normally.
        The emulator need not be running (nothing here needs its listeners).

        Example:
            >>> task_group.start_soon(hub.serve_stream, server_side)  # doctest: +SKIP

        :class:`aioiothub.testing.MemoryNetwork` is built on this (through :meth:`accept_stream`).

        Args:
            stream: the connection's byte stream, e.g. one end of an in-memory pair.
        """
        await serve_mqtt(self, stream, _MEMORY_PEER)

    def accept_stream(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one device or DPS connection over an already open byte stream: no socket, no TLS.

        :meth:`serve_stream` in the running emulator's task group, for callers that cannot await:
        the stream is served until either side closes it or the emulator stops.
        :class:`aioiothub.testing.MemoryNetwork` connects clients through it.

        Raises:
            RuntimeError: the emulator is not running.
        """
        self._running("accept_stream")
        assert self._task_group is not None
        self._task_group.start_soon(self.serve_stream, stream, name="aioiothub emulator memory connection")

    def _trust_certificate(self, certificate_pem: bytes) -> None:
        if self._server_context is not None:
            trust_client_certificate(self._server_context, certificate_pem)

    # --- what clients need --------------------------------------------------------------------

    def _running(self, what: str) -> None:
        if self._exit_stack is None:
            raise RuntimeError(f"{what} is known only inside 'async with Emulator()'")

    @property
    def port(self) -> int:
        """The MQTT-over-TLS port being listened on.

        Raises:
            RuntimeError: the emulator is not running.
        """
        self._running("port")
        assert self._port is not None
        return self._port

    @property
    def websocket_port(self) -> int | None:
        """The MQTT-over-WebSocket port being listened on, or ``None`` when disabled.

        Raises:
            RuntimeError: the emulator is not running.
        """
        self._running("websocket_port")
        return self._websocket_port

    @property
    def amqp(self) -> AmqpSurface:
        """The cloud side over AMQP: its ports, ``event_hub_name`` and the built-in endpoint's
        connection strings (see :class:`~aioiothub.emulator.amqp.surface.AmqpSurface`)."""
        return self._amqp

    @property
    def host(self) -> str:
        """The address the listeners are bound to."""
        return self._host

    @property
    def ca_pem(self) -> bytes:
        """The certificate clients must trust (PEM): the emulator's CA, or the given ``certfile``.

        Raises:
            RuntimeError: the emulator has not been started yet.
        """
        if self._ca_pem is None:
            raise RuntimeError("ca_pem is known only once the emulator has started")
        return self._ca_pem

    @property
    def ca_file(self) -> Path:
        """Path of a PEM file holding :attr:`ca_pem`.

        With ``state_dir`` it is ``ca.pem`` there (``server-ca.pem`` with a ``certfile``), the same
        path at every start; otherwise a temporary file, removed when the emulator stops.

        Raises:
            RuntimeError: the emulator is not running.
        """
        self._running("ca_file")
        assert self._ca_file is not None
        return self._ca_file

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this emulator (hostname checks stay on).

        Example:
            >>> context = hub.client_ssl_context()  # doctest: +SKIP
        """
        context = client_ssl_context(self.ca_pem)
        if self._certfile is not None:
            # The given server certificate itself is the trust anchor, whoever issued it.
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    # --- the service REST API -------------------------------------------------------------------

    @property
    def policies(self) -> list[SharedAccessPolicy]:
        """The shared access policies of the service REST API."""
        return list(self._policies)

    @property
    def service_host(self) -> str:
        """``HostName`` for service SDKs: the host name, with the HTTPS port unless it is 443.

        Raises:
            RuntimeError: the emulator is not running, or its WebSocket/HTTPS listener is disabled.
        """
        self._running("service_host")
        if self._websocket_port is None:
            raise RuntimeError("the service API is served on the WebSocket port, which is disabled")
        if self._websocket_port == WEBSOCKET_PORT:
            return self.hostname
        return f"{self.hostname}:{self._websocket_port}"

    def service_policy_connection_string(self, policy_name: str) -> str:
        """The connection string of a shared access policy, e.g. ``"registryRead"``.

        Raises:
            ValueError: no such policy.
            RuntimeError: the emulator is not running, or its HTTPS listener is disabled.
        """
        for policy in self._policies:
            if policy.name == policy_name:
                return policy_connection_string(self.service_host, policy)
        raise ValueError(f"policy_name: no shared access policy named {policy_name!r}")

    @property
    def service_connection_string(self) -> str:
        """The ``iothubowner`` connection string for service SDKs and the REST API.

        ``HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=…`` (no port on 443).

        Example:
            >>> registry = IoTHubRegistryManager.from_connection_string(hub.service_connection_string)  # doctest: +SKIP
        """
        return self.service_policy_connection_string("iothubowner")

    def _service_scopes(self) -> list[str]:
        scopes = [self.hostname]
        if self._websocket_port is not None:
            scopes.append(f"{self.hostname}:{self._websocket_port}")
        return scopes

    # --- HTTPS: file upload and IoT Edge ------------------------------------------------------

    @property
    def blob_port(self) -> int | None:
        """The embedded blob endpoint's port, or ``None`` when uploads go to an external account.

        Raises:
            RuntimeError: the emulator is not running.
        """
        self._running("blob_port")
        return self._https.blob_port

    @property
    def blob_store(self) -> BlobStore | None:
        """The embedded blob store (``None`` with an external storage account), for fault injection."""
        return self._https.blob_store

    def uploads(self, device_id: str | None = None) -> list[UploadRecord]:
        """The file uploads devices have notified the hub about, oldest first.

        Example:
            >>> (record,) = hub.uploads("dev1")  # doctest: +SKIP
            >>> record.blob_name, record.is_success  # doctest: +SKIP
            ('dev1/report.csv', True)

        Args:
            device_id: only this device's uploads.
        """
        return self._https.uploads.records(device_id)

    async def upload_content(self, record: UploadRecord) -> bytes:
        """Read an uploaded blob back from storage.

        Raises:
            LookupError: the blob does not exist (the device notified a failed upload, say).
        """
        return await self._https.read_upload(record)

    async def edge_environment(
        self, device_id: str, module_id: str, *, routes: list[str] | tuple[str, ...] = ()
    ) -> EdgeEnvironment:
        """Play the IoT Edge runtime for a module: its workload API, environment and routes.

        The device and module are registered (with SAS keys) when they are not yet. The device's
        workload API (trust bundle, signing with the module's key) listens on a Unix socket until
        the emulator stops, and the emulator serves as the module's edgeHub (the gateway host).

        Example:
            >>> route = 'FROM /messages/modules/filter/outputs/o1 INTO BrokeredEndpoint("/modules/sink/inputs/i1")'
            >>> env = await hub.edge_environment("edge1", "filter", routes=[route])  # doctest: +SKIP
            >>> subprocess.Popen(["python", "module.py"], env={**os.environ, **env.variables})  # doctest: +SKIP

        Args:
            device_id: the Edge device.
            module_id: the module.
            routes: edgeHub routes to add to the device (see :mod:`aioiothub.emulator.edge.edge_hub`).

        Returns:
            The module's environment: ``variables`` for the process, and ``debug_variables`` (the
            connection-string alternative).

        Raises:
            RuntimeError: the emulator is not running.
            ValueError: a route is not in the supported syntax, or the module uses X.509.
        """
        self._running("edge_environment")
        return await self._https.edge_environment(
            device_id, module_id, list(routes), gateway_hostname=public_host(self._host), ca_file=self.ca_file
        )
