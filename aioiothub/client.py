"""The device and module clients: the public face of a :class:`~aioiothub.session.HubSession`."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc

from aioiothub import edge, module_methods, upload
from aioiothub.auth import ConnectionString, SasTokenCredential, SharedAccessKeyCredential, X509Credential
from aioiothub.http import HttpSettings
from aioiothub.message import Message
from aioiothub.methods import MethodRequest
from aioiothub.module_methods import MethodResult
from aioiothub.options import ProxyOptions, ReconnectPolicy, require_positive_int, require_positive_number
from aioiothub.protocol import topics
from aioiothub.protocol.connect import product_info_string, validate_identity
from aioiothub.protocol.limits import MAX_TELEMETRY_BYTES, message_wire_size
from aioiothub.protocol.twin import validate_patch, validate_section_size
from aioiothub.session import HubSession, SessionSettings
from aioiothub.twin import Twin
from aioiothub.upload import BlobStorageInfo, ProgressCallback, UploadSource

__all__ = ["IoTHubDeviceClient", "IoTHubModuleClient"]

MessageLike = Message | bytes | str | dict[str, Any]

_MQTT_PORT = 8883
_WEBSOCKET_PORT = 443
_MAX_KEEPALIVE = 1177
_default_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The system trust store with TLS 1.2 or newer and hostname checks, shared by every client."""
    global _default_ssl_context
    if _default_ssl_context is None:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _default_ssl_context = context
    return _default_ssl_context


def _to_message(message: object) -> Message:
    if isinstance(message, Message):
        return message
    if isinstance(message, bytes | bytearray | memoryview | str):
        return Message(bytes(message) if not isinstance(message, str) else message)
    if isinstance(message, dict):
        return Message.json(message)
    raise TypeError(f"message must be a Message, bytes, str or dict, not {type(message).__name__}")


class _HubClient:
    """What device and module clients share: lifecycle, telemetry, twin and direct methods."""

    def __init__(
        self,
        *,
        hostname: str,
        device_id: str,
        module_id: str | None = None,
        shared_access_key: str | None = None,
        sas_token: str | None = None,
        renew_sas_token: Callable[[], str | Awaitable[str]] | None = None,
        x509: X509Credential | None = None,
        port: int | None = None,
        websockets: bool = False,
        proxy: ProxyOptions | None = None,
        ssl_context: ssl.SSLContext | None = None,
        gateway_hostname: str | None = None,
        model_id: str | None = None,
        product_info: str | None = None,
        keepalive: int = 60,
        sas_ttl: int = 3600,
        request_timeout: float = 30.0,
        reconnect: ReconnectPolicy | bool = True,
        max_in_flight: int = 128,
        inbound_buffer_size: int = 256,
    ) -> None:
        if not isinstance(hostname, str) or not hostname:
            raise ValueError("hostname must be a non-empty string")
        validate_identity(device_id, "device_id")
        if module_id is not None:
            validate_identity(module_id, "module_id")
        credentials = [name for name, value in (
            ("shared_access_key", shared_access_key), ("sas_token", sas_token), ("x509", x509)
        ) if value is not None]
        if len(credentials) != 1:
            raise ValueError(
                "give exactly one of shared_access_key, sas_token or x509"
                + (f" (got {', '.join(credentials)})" if credentials else "")
            )
        if renew_sas_token is not None and sas_token is None:
            raise ValueError("renew_sas_token needs sas_token")
        if renew_sas_token is not None and not callable(renew_sas_token):
            raise TypeError("renew_sas_token must be callable")
        credential: SharedAccessKeyCredential | SasTokenCredential | X509Credential
        if shared_access_key is not None:
            credential = SharedAccessKeyCredential(
                shared_access_key, ttl=require_positive_int(sas_ttl, "sas_ttl")
            )
        elif sas_token is not None:
            credential = SasTokenCredential(sas_token, renew=renew_sas_token)
        else:
            if not isinstance(x509, X509Credential):
                raise TypeError("x509 must be an aioiothub.X509Credential")
            credential = x509
        if port is None:
            port = _WEBSOCKET_PORT if websockets else _MQTT_PORT
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
        if not isinstance(websockets, bool):
            raise TypeError("websockets must be True or False")
        if proxy is not None and not isinstance(proxy, ProxyOptions):
            raise TypeError("proxy must be an aioiothub.ProxyOptions")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError("ssl_context must be an ssl.SSLContext")
        if gateway_hostname is not None and (not isinstance(gateway_hostname, str) or not gateway_hostname):
            raise ValueError("gateway_hostname must be a non-empty string")
        if model_id is not None and (not isinstance(model_id, str) or not model_id.startswith("dtmi:")):
            raise ValueError(f"model_id must be a DTDL model id starting with 'dtmi:', not {model_id!r}")
        if product_info is not None and not isinstance(product_info, str):
            raise TypeError("product_info must be a string")
        require_positive_int(keepalive, "keepalive", maximum=_MAX_KEEPALIVE)
        request_timeout = require_positive_number(request_timeout, "request_timeout")
        if reconnect is True:
            policy: ReconnectPolicy | None = ReconnectPolicy()
        elif reconnect is False:
            policy = None
        elif isinstance(reconnect, ReconnectPolicy):
            policy = reconnect
        else:
            raise TypeError("reconnect must be True, False or a ReconnectPolicy")
        if isinstance(credential, X509Credential):
            if ssl_context is None:
                ssl_context = ssl.create_default_context()
                ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
            credential.load_into(ssl_context)
        self._settings = SessionSettings(
            hostname=hostname,
            device_id=device_id,
            module_id=module_id,
            credential=credential,
            connect_host=gateway_hostname or hostname,
            port=port,
            websockets=websockets,
            ssl_context=ssl_context or default_ssl_context(),
            proxy=proxy,
            product_info=product_info_string(product_info),
            model_id=model_id,
            keepalive=keepalive,
            request_timeout=request_timeout,
            reconnect=policy,
            max_in_flight=require_positive_int(max_in_flight, "max_in_flight", maximum=65535),
            inbound_buffer_size=require_positive_int(inbound_buffer_size, "inbound_buffer_size"),
        )
        self._session: HubSession | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    @classmethod
    def _options_from_connection_string(cls, connection_string: str, options: dict[str, Any]) -> dict[str, Any]:
        parsed = ConnectionString.parse(connection_string)
        for name in ("hostname", "device_id", "module_id", "shared_access_key", "sas_token"):
            if name in options:
                raise TypeError(f"{name} comes from the connection string; do not pass it as well")
        if parsed.shared_access_key_name is not None:
            raise ValueError(
                "the connection string names a shared access policy (SharedAccessKeyName): that is a "
                "service connection string, not a device's"
            )
        if parsed.x509 and options.get("x509") is None:
            raise ValueError("the connection string says x509=true: pass x509=X509Credential(cert_file, key_file)")
        built: dict[str, Any] = {"hostname": parsed.host_name, "device_id": parsed.device_id}
        if parsed.module_id is not None:
            built["module_id"] = parsed.module_id
        if parsed.shared_access_key is not None:
            built["shared_access_key"] = parsed.shared_access_key
        if parsed.shared_access_signature is not None:
            built["sas_token"] = parsed.shared_access_signature
        if parsed.gateway_host_name is not None and "gateway_hostname" not in options:
            built["gateway_hostname"] = parsed.gateway_host_name
        return {**built, **options}

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("the client is already open")
        self._session = HubSession(self._settings)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await task_group.start(self._session.run, name="aioiothub connection")
        except BaseException as exc:
            task_group.cancel_scope.cancel()
            try:
                await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseException as group:
                raise _unwrap(group) from None
            self._session = None
            raise
        self._task_group = task_group
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        task_group, session = self._task_group, self._session
        if task_group is None or session is None:
            return None
        self._task_group = None
        session.close()
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc, tb)
        except BaseException as group:
            raise _unwrap(group) from None
        finally:
            self._session = None

    def _require_session(self) -> HubSession:
        if self._session is None:
            raise RuntimeError("the client is not open: use it as 'async with client:'")
        return self._session

    @property
    def connected(self) -> bool:
        """Whether the client has a live connection to the hub right now."""
        return self._session is not None and self._session.connected

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it already is)."""
        await self._require_session().current()

    def connection_states(self) -> AsyncIterator[bool]:
        """Yield ``True`` or ``False`` each time the connection comes up or goes down.

        Example:
            >>> async def watch(client):
            ...     async for up in client.connection_states():
            ...         print("connected" if up else "reconnecting")
        """
        return self._require_session().connection_states()

    # -------------------------------------------------------------- telemetry

    async def _send(self, message: object, qos: int, output_name: str | None) -> None:
        session = self._require_session()
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1 (IoT Hub closes the connection on QoS 2), not {qos!r}")
        built = _to_message(message)
        if output_name is not None:
            built = built.replace(output_name=output_name)
        properties = built.wire_properties()  # once: both the size check and the topic need it
        size = message_wire_size(built.body, properties)
        if size > MAX_TELEMETRY_BYTES:
            raise ValueError(f"message is {size} bytes on the wire; IoT Hub accepts at most {MAX_TELEMETRY_BYTES}")
        settings = self._settings
        topic = topics.telemetry_topic(settings.device_id, settings.module_id, properties)
        await session.publish(topic, built.body, qos)

    async def send_message(self, message: MessageLike, *, qos: int = 1) -> None:
        """Send telemetry; returns once the hub acknowledged it (QoS 1) or it was written (QoS 0).

        A ``dict`` is sent as JSON with content type ``application/json`` and encoding ``utf-8``;
        ``bytes`` and ``str`` are sent as the body. Many concurrent calls share the connection
        (up to ``max_in_flight`` unacknowledged at once). If the connection drops before the
        acknowledgement, the message is sent again on the next connection (at-least-once).

        Raises:
            TypeError: ``message`` is of an unsupported type.
            ValueError: the message is over 256 KiB on the wire, or ``qos`` is not 0 or 1.
            TimeoutError: no acknowledgement within ``request_timeout``.

        Example:
            >>> async def report(client):
            ...     await client.send_message({"temperature": 21.5})
            ...     await client.send_message(Message(b"raw", properties={"alert": "1"}))
        """
        await self._send(message, qos, None)

    # ------------------------------------------------------------------ twin

    async def get_twin(self) -> Twin:
        """Read the twin.

        Raises:
            ServiceError: the hub answered with an error status (``ThrottledError`` for 429).
            TimeoutError: no answer within ``request_timeout``.

        Example:
            >>> async def show(client):
            ...     twin = await client.get_twin()
            ...     print(twin.desired.get("interval"), twin.reported_version)
        """
        return await self._require_session().get_twin()

    async def update_reported_properties(self, patch: dict[str, Any]) -> int:
        """Merge ``patch`` into the reported properties (``None`` deletes a key).

        Returns:
            The new reported ``$version``.

        Raises:
            ValueError: the patch breaks a twin rule (key characters, depth, sizes); nothing is sent.
            ServiceError: the hub refused the patch.
            TimeoutError: no answer within ``request_timeout``.

        Example:
            >>> async def report_firmware(client):
            ...     version = await client.update_reported_properties({"fw": "1.2.0"})
        """
        if not isinstance(patch, dict):
            raise TypeError(f"patch must be a dict, not {type(patch).__name__}")
        validate_patch(patch, argument="patch")
        validate_section_size(patch, argument="patch")
        body = json.dumps(patch, separators=(",", ":"), allow_nan=False).encode()
        return await self._require_session().update_reported(body)

    def desired_property_patches(self) -> AsyncIterator[dict[str, Any]]:
        """Iterate over desired-property patches as the solution back end writes them.

        Each patch is a dict including ``"$version"``. Changes made while the device was offline
        (or while the consumer fell behind) arrive as one synthetic patch after the client
        re-reads the twin, so no desired change is lost.

        Example:
            >>> async def follow(client):
            ...     async for patch in client.desired_property_patches():
            ...         print("desired now at version", patch["$version"])
        """
        return self._require_session().desired_patches()

    # ---------------------------------------------------------------- methods

    def method_requests(self) -> AsyncIterator[MethodRequest]:
        """Iterate over direct method invocations; answer each with ``await request.respond(...)``.

        While nobody iterates, invocations are answered with status 503. If the consumer falls
        behind by more than ``inbound_buffer_size`` requests, further ones are answered with 503
        and logged.
        """
        return self._require_session().method_requests()


def _unwrap(error: BaseException) -> BaseException:
    """The single meaningful error inside anyio's exception groups."""
    while isinstance(error, BaseExceptionGroup):
        meaningful = [e for e in error.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        if len(meaningful) != 1:
            return error
        error = meaningful[0]
    return error


class IoTHubDeviceClient(_HubClient):
    """An IoT Hub device: telemetry, cloud-to-device messages, twin and direct methods.

    Use it as an async context manager; the connection lives as long as the ``async with``
    block, and is re-established automatically when it drops.

    Example:
        >>> async def main(connection_string):
        ...     async with IoTHubDeviceClient.from_connection_string(connection_string) as client:
        ...         await client.send_message({"temperature": 21.5})
    """

    def __init__(self, **options: Any) -> None:
        if options.get("module_id") is not None:
            raise ValueError("module_id is for IoTHubModuleClient")
        super().__init__(**options)

    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> IoTHubDeviceClient:
        """Create a client from a device connection string (``HostName=…;DeviceId=…;SharedAccessKey=…``).

        Keyword options are those of the constructor (``port``, ``ssl_context``, ``websockets`` …).
        """
        built = cls._options_from_connection_string(connection_string, options)
        if "module_id" in built:
            raise ValueError("the connection string names a module: use IoTHubModuleClient")
        return cls(**built)

    def cloud_messages(self) -> AsyncIterator[Message]:
        """Iterate over cloud-to-device messages.

        A message is acknowledged to the hub (completed) only when the loop takes it, so a crash
        before that leaves it with the hub for redelivery. Up to ``inbound_buffer_size`` messages
        wait for the consumer; past that they stay unacknowledged (logged) and the hub redelivers
        them after the next reconnect.

        Example:
            >>> async def receive(client):
            ...     async for message in client.cloud_messages():
            ...         print(message.body, message.properties)
        """
        return self._require_session().cloud_messages()

    # ---------------------------------------------- file upload (aioiothub.upload)

    async def upload_file(
        self,
        blob_name: str,
        source: UploadSource,
        *,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
        chunk_size: int = upload.DEFAULT_CHUNK_SIZE,
        concurrency: int = upload.DEFAULT_CONCURRENCY,
    ) -> None:
        """Upload a file to the hub's storage account as blob ``{device_id}/{blob_name}``.

        ``source`` is ``bytes``, a path (``str`` or ``os.PathLike``), a binary file object or an
        async iterable of ``bytes``. Small data goes as one request; larger data in blocks of
        ``chunk_size`` bytes, ``concurrency`` at a time (memory stays within about
        ``chunk_size * (concurrency + 1)``), each retried with back-off. The hub is notified of
        success, or of failure (also when the upload is cancelled) before the error propagates.
        Needs no open MQTT connection.

        Args:
            blob_name: the blob's name under the device's folder.
            source: what to upload.
            content_type: the blob's content type (``application/octet-stream`` by default).
            progress: called as ``progress(bytes_uploaded, total_or_None)`` after each block.
            chunk_size: block size in bytes.
            concurrency: blocks uploaded at once.

        Raises:
            TypeError, ValueError: an invalid argument (nothing is sent).
            OSError: the file cannot be opened (nothing is sent).
            ServiceError: the hub or the storage refused (403 for a bad SAS, say).
            TimeoutError, ConnectError, ConnectionLostError: a request could not be completed.

        Example:
            >>> async def send_log(client):
            ...     await client.upload_file("logs/today.txt", "/var/log/app.log", content_type="text/plain")
        """
        await upload.upload_file(
            HttpSettings.from_session(self._settings),
            blob_name,
            source,
            content_type=content_type,
            progress=progress,
            chunk_size=chunk_size,
            concurrency=concurrency,
        )

    async def get_storage_info_for_blob(self, blob_name: str) -> BlobStorageInfo:
        """Ask the hub where to upload ``blob_name`` (for uploads with your own storage client).

        Example:
            >>> async def upload_with_azure_sdk(client, data):
            ...     info = await client.get_storage_info_for_blob("report.csv")
            ...     ...  # BlobClient.from_blob_url(info.sas_url).upload_blob(data)
            ...     await client.notify_blob_upload_status(info.correlation_id, True, 201, "done")
        """
        return await upload.get_storage_info(HttpSettings.from_session(self._settings), blob_name)

    async def notify_blob_upload_status(
        self, correlation_id: str, is_success: bool, status_code: int, status_description: str
    ) -> None:
        """Tell the hub how an upload begun with :meth:`get_storage_info_for_blob` ended."""
        await upload.notify_upload_status(
            HttpSettings.from_session(self._settings), correlation_id, is_success, status_code, status_description
        )


class IoTHubModuleClient(_HubClient):
    """An IoT Hub module identity (also an IoT Edge module): telemetry, outputs, inputs, twin, methods.

    Example:
        >>> async def main(connection_string):
        ...     async with IoTHubModuleClient.from_connection_string(connection_string) as module:
        ...         await module.send_message_to_output({"ok": True}, "output1")
    """

    def __init__(self, **options: Any) -> None:
        if options.get("module_id") is None:
            raise ValueError("module_id is required for IoTHubModuleClient")
        super().__init__(**options)

    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> IoTHubModuleClient:
        """Create a client from a module connection string (with ``ModuleId=…``)."""
        built = cls._options_from_connection_string(connection_string, options)
        if "module_id" not in built:
            raise ValueError("the connection string has no ModuleId: use IoTHubDeviceClient")
        return cls(**built)

    async def send_message_to_output(self, message: MessageLike, output_name: str) -> None:
        """Send a message on an IoT Edge output (``$.on``); otherwise like :meth:`send_message`."""
        if not isinstance(output_name, str) or not output_name:
            raise ValueError("output_name must be a non-empty string")
        await self._send(message, 1, output_name)

    def input_messages(self, input_name: str | None = None) -> AsyncIterator[Message]:
        """Iterate over messages routed to this module's inputs (all of them, or one by name).

        Each message has ``input_name`` set; acknowledgement works as for cloud-to-device messages.
        """
        if input_name is not None and (not isinstance(input_name, str) or not input_name):
            raise ValueError("input_name must be a non-empty string or None")
        return self._require_session().input_messages(input_name)

    # ------------------------------------------- IoT Edge (aioiothub.edge, module_methods)

    @classmethod
    async def from_edge_environment(
        cls, *, environ: Mapping[str, str] | None = None, **options: Any
    ) -> IoTHubModuleClient:
        """Create the module client of an IoT Edge module from the Edge runtime's environment.

        Reads ``IOTEDGE_*`` (or, for local debugging, ``EdgeHubConnectionString`` and
        ``EdgeModuleCACertificateFile``), gets edgeHub's trust bundle from the workload API and has
        it sign every SAS token, renewals included; the key never enters the process. The client
        connects to edgeHub (the gateway host).

        Args:
            environ: the environment to read; ``os.environ`` when ``None``.
            options: further constructor options (``websockets``, ``keepalive``, ``sas_ttl``…).

        Raises:
            CredentialError: variables are missing (named in the message), or the workload API
                cannot be reached or refuses.

        Example:
            >>> async def main():
            ...     module = await IoTHubModuleClient.from_edge_environment()
            ...     async with module:
            ...         await module.send_message_to_output({"ok": True}, "output1")
        """
        return cls(**await edge.edge_client_options(environ, options))

    async def invoke_method(
        self,
        device_id: str,
        method_name: str,
        payload: Any = None,
        *,
        module_id: str | None = None,
        connect_timeout: int = 0,
        response_timeout: int = 30,
    ) -> MethodResult:
        """Invoke a direct method on a device or module through the IoT Edge gateway (HTTPS).

        Args:
            device_id: the target device.
            method_name: the method.
            payload: a JSON-serialisable request payload.
            module_id: the target module, for a module method.
            connect_timeout: seconds the gateway waits for the target to come online (0 to 300).
            response_timeout: seconds the gateway waits for the answer (5 to 300).

        Returns:
            The target's status and payload.

        Raises:
            ServiceError: 404 when the target is offline, or another refusal.
            TimeoutError: the target did not answer within ``response_timeout``.

        Example:
            >>> async def reboot(module):
            ...     result = await module.invoke_method("sensor-1", "reboot", {"delay": 5})
            ...     print(result.status, result.payload)
        """
        return await module_methods.invoke_method(
            HttpSettings.from_session(self._settings),
            device_id,
            method_name,
            payload,
            module_id=module_id,
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
        )
