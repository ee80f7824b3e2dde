"""The device and module clients: the public face of a :class:`~aioiothub.session.HubSession`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, Unpack

import anyio
import anyio.abc

from aioiothub import edge, module_methods, pnp, upload
from aioiothub.auth import X509Credential
from aioiothub.background_errors import BackgroundError
from aioiothub.exceptions import unwrap_group
from aioiothub.http import HttpSettings
from aioiothub.message import Message, encode_json
from aioiothub.methods import MethodRequest, MethodResult
from aioiothub.options import ClientOptions
from aioiothub.protocol.twin import validate_patch, validate_section_size
from aioiothub.session import HubSession, SessionSettings
from aioiothub.settings import TokenRenewer, build_settings, identity_from_sas_token, options_from_connection_string
from aioiothub.twin import Twin
from aioiothub.upload import BlobStorageInfo, ProgressCallback, UploadSource

if TYPE_CHECKING:
    from aioiothub.provisioned import ProvisionedDeviceClient
    from aioiothub.provisioning import ProvisioningClient

__all__ = ["AckMode", "IoTHubDeviceClient", "IoTHubModuleClient", "MessageLike"]

MessageLike = Message | bytes | str | dict[str, Any]
"""What ``send_message`` accepts: a dict is sent as JSON, bytes and str as the body."""

AckMode = Literal["auto", "manual"]
"""How received messages are acknowledged: as the loop takes them, or by ``await message.acknowledge()``."""

# What Message.json() sets, for dicts sent without building a Message first.
_JSON_PROPERTIES = MappingProxyType({"$.ct": "application/json", "$.ce": "utf-8"})


def _manual_ack(ack: object) -> bool:
    if ack not in ("auto", "manual"):
        raise ValueError(f"ack must be 'auto' or 'manual', not {ack!r}")
    return ack == "manual"


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

    def __init__(self, settings: SessionSettings) -> None:
        self._settings = settings
        self._session: HubSession | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

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
                raise unwrap_group(group) from None
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
            raise unwrap_group(group, fatal=session.fatal_error) from None
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
        """Yield ``True`` or ``False`` each time the connection comes up or goes down, from this call on.

        Up to 16 changes wait for a slow consumer; changes past those are not queued.

        Example:
            >>> async def watch(client):
            ...     async for up in client.connection_states():
            ...         print("connected" if up else "reconnecting")
        """
        return self._require_session().connection_states()

    def errors(self) -> AsyncIterator[BackgroundError]:
        """Yield the errors the client recovers from on its own, as typed events.

        A lost connection (:class:`~aioiothub.background_errors.ConnectionDropped`), a failed or
        refused reconnect (``ReconnectFailed``, with the CONNACK ``return_code``), a loop that fell
        behind (``ConsumerFellBehind``: which stream, how many), a failed token renewal
        (``RenewalFailed``), a method nobody handles, a malformed message, a failed twin re-read.
        The client carries on after each; errors it cannot recover from are raised from the
        ``async with`` block instead. Every loop sees every event from when it starts; each keeps
        at most 64 waiting, dropping the oldest and then yielding ``ErrorsDropped(count)``. The
        library itself prints nothing: it logs on the ``aioiothub`` logger, which has no output
        unless the application configures logging.

        Example:
            >>> async def watch(client):
            ...     async for error in client.errors():
            ...         print("recovered from:", error)
        """
        return self._require_session().errors.events()

    async def update_sas_token(self, sas_token: str) -> None:
        """Use a new SAS token, made elsewhere, from now on.

        The client reconnects with it at once -- a planned reconnect, as for a renewal: nothing
        queued or in flight is lost -- so the old token's expiry never forces a drop. Returns once
        the new connection is up.

        Example:
            >>> async def rotate(client, token_service):
            ...     await client.update_sas_token(await token_service.token_for("dev1"))

        Raises:
            RuntimeError: the client is not open, or was not created with a SAS token.
            CredentialError: the token is malformed, has expired, or is scoped to another device
                or module; the message says which.
            TimeoutError: no connection with the new token within ``request_timeout`` (the
                token stays in use; the client keeps trying).
        """
        await self._require_session().update_token(sas_token)

    # -------------------------------------------------------------- telemetry

    async def _send(self, message: object, qos: int, output_name: str | None, retain: bool = False) -> None:
        session = self._require_session()
        if type(message) is dict:
            # The common case, without building a Message: the same body and properties.
            body = encode_json(message)
            properties: Any = _JSON_PROPERTIES if output_name is None else {**_JSON_PROPERTIES, "$.on": output_name}
        else:
            built = _to_message(message)
            if output_name is not None:
                built = built.replace(output_name=output_name)
            body, properties = built.body, built.wire_properties()
        if not isinstance(retain, bool):
            raise TypeError("retain must be True or False")
        await session.publish(session.protocol.telemetry(body, properties, qos=qos, retain=retain))

    async def send_message(self, message: MessageLike, *, qos: int = 1, retain: bool = False) -> None:
        """Send telemetry; returns once the hub acknowledged it (QoS 1) or it was written (QoS 0).

        A ``dict`` is sent as JSON with content type ``application/json`` and encoding ``utf-8``;
        ``bytes`` and ``str`` are sent as the body. Many concurrent calls share the connection
        (up to ``max_in_flight`` unacknowledged at once). If the connection drops before the
        acknowledgement, the message is sent again on the next connection (at-least-once).
        With ``retain=True`` the MQTT RETAIN flag is set: IoT Hub does not store the message, it
        forwards it with the application property ``mqtt-retain: true`` for routing to act on.

        Raises:
            TypeError: ``message`` is of an unsupported type.
            ValueError: the message is over 256 KiB on the wire, or ``qos`` is not 0 or 1.
            TimeoutError: no acknowledgement within ``request_timeout``.

        Example:
            >>> async def report(client):
            ...     await client.send_message({"temperature": 21.5})
            ...     await client.send_message(Message(b"raw", properties={"alert": "1"}))
        """
        await self._send(message, qos, None, retain)

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

    def writable_property_requests(
        self, *, components: Collection[str] | None = None, pending: bool = True
    ) -> AsyncIterator[pnp.WritablePropertyRequest]:
        """Iterate over Plug and Play writable-property requests, one per component and property.

        Each desired patch is split into :class:`~aioiothub.pnp.WritablePropertyRequest` values
        carrying the desired ``$version``; ``await request.respond(200)`` acknowledges one in the
        reported properties as the conventions say (``{"value", "ac", "av", "ad"}``, nested under
        its component with ``"__t": "c"``). With ``pending=True`` the loop starts with the
        properties already in the twin that were not yet acknowledged with their value.

        This loop and :meth:`desired_property_patches` share the same patches: use one of them.

        Args:
            components: the model's component names, for desired patches that lack the
                ``"__t": "c"`` marker.
            pending: first yield what the twin holds that the device has not acknowledged.

        Example:
            >>> async def follow(client):
            ...     async for request in client.writable_property_requests():
            ...         apply(request.component, request.name, request.value)
            ...         await request.respond(200, "applied")
        """
        if not isinstance(pending, bool):
            raise TypeError("pending must be True or False")
        if components is not None and (isinstance(components, str) or not isinstance(components, Collection)):
            raise TypeError("components must be a collection of component names, such as a set")
        return pnp.writable_property_requests(
            self._require_session(), self.update_reported_properties, components=components, pending=pending
        )

    # ---------------------------------------------------------------- methods

    def method_requests(self, method_name: str | None = None) -> AsyncIterator[MethodRequest]:
        """Iterate over direct method invocations; answer each with ``await request.respond(...)``.

        ``method_requests("reboot")`` yields only the invocations of ``reboot``; ``method_requests()``
        yields every method that no loop asked for by name. Plug and Play component commands are
        named ``"{component}*{command}"``, and each request has them split (``request.component``,
        ``request.command``). While no loop takes a method, invocations are answered with 503; past
        ``inbound_buffer_size`` requests waiting, further ones are answered with 503. Both are
        reported on :meth:`errors`. Several loops over the same name share its requests: each
        request goes to one of them.

        Example:
            >>> async def serve_reboots(client):
            ...     async for request in client.method_requests("reboot"):
            ...         await request.respond(200, {"rebooting": True})
        """
        if method_name is not None and (not isinstance(method_name, str) or not method_name):
            raise ValueError("method_name must be a non-empty string or None")
        return self._require_session().method_requests(method_name)


def _identity_from_connection_string(
    connection_string: str, x509: X509Credential | None, options: ClientOptions
) -> dict[str, Any]:
    identity = options_from_connection_string(connection_string, x509=x509)
    for name in ("hostname", "device_id", "module_id", "shared_access_key", "sas_token"):
        if name in options:
            raise TypeError(f"{name} comes from the connection string; do not pass it as well")
    gateway = identity.pop("gateway_hostname")
    if gateway is not None and "gateway_hostname" not in options:
        options["gateway_hostname"] = gateway
    return identity


def _identity_from_sas_token(sas_token: str, options: ClientOptions) -> tuple[str, str, str | None]:
    for name in ("hostname", "device_id", "module_id", "shared_access_key", "sas_token", "x509"):
        if name in options:
            raise TypeError(f"{name} comes from the SAS token; do not pass it as well")
    return identity_from_sas_token(sas_token)


class IoTHubDeviceClient(_HubClient):
    """An IoT Hub device: telemetry, cloud-to-device messages, twin and direct methods.

    Use it as an async context manager; the connection lives as long as the ``async with``
    block, and is re-established automatically when it drops.

    Example:
        >>> async def main(connection_string):
        ...     async with IoTHubDeviceClient.from_connection_string(connection_string) as client:
        ...         await client.send_message({"temperature": 21.5})
    """

    def __init__(
        self,
        *,
        hostname: str,
        device_id: str,
        shared_access_key: str | None = None,
        sas_token: str | None = None,
        renew_sas_token: TokenRenewer | None = None,
        x509: X509Credential | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        """Create a device client (it connects when entered with ``async with``).

        Args:
            hostname: the hub, e.g. ``myhub.azure-devices.net``.
            device_id: the device identity.
            shared_access_key: the device's key; SAS tokens are signed with it and renewed.
            sas_token: a SAS token made elsewhere.
            renew_sas_token: called for a new token before ``sas_token`` expires (returns one,
                directly or awaitable).
            x509: a client certificate and key (:class:`~aioiothub.X509Credential`).
            **options: see :class:`~aioiothub.options.ClientOptions` (``port``, ``websockets``,
                ``proxy``, ``ssl_context``, ``gateway_hostname``, ``model_id``, ``keepalive``,
                ``request_timeout``, ``reconnect``, ``transport``, ``will``, ``clean_session`` …).

        Raises:
            TypeError, ValueError: an argument is invalid; the message names it. Exactly one of
                ``shared_access_key``, ``sas_token`` and ``x509`` must be given.
            CredentialError: the key, token or certificate cannot be used.
        """
        if "module_id" in options:
            raise ValueError("module_id is for IoTHubModuleClient")
        super().__init__(
            build_settings(
                hostname=hostname,
                device_id=device_id,
                module_id=None,
                shared_access_key=shared_access_key,
                sas_token=sas_token,
                renew_sas_token=renew_sas_token,
                x509=x509,
                options=options,
            )
        )

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        x509: X509Credential | None = None,
        renew_sas_token: TokenRenewer | None = None,
        **options: Unpack[ClientOptions],
    ) -> IoTHubDeviceClient:
        """Create a client from a device connection string (``HostName=…;DeviceId=…;SharedAccessKey=…``).

        Every key the official SDKs accept is understood (``HostName``, ``DeviceId``,
        ``SharedAccessKey``, ``SharedAccessSignature``, ``GatewayHostName``, ``x509=true``).
        Keyword options are those of the constructor (``port``, ``ssl_context``, ``websockets`` …).
        """
        identity = _identity_from_connection_string(connection_string, x509, options)
        if identity.pop("module_id") is not None:
            raise ValueError("the connection string names a module: use IoTHubModuleClient")
        return cls(**identity, x509=x509, renew_sas_token=renew_sas_token, **options)

    @classmethod
    def from_sas_token(
        cls, sas_token: str, *, renew_sas_token: TokenRenewer | None = None, **options: Unpack[ClientOptions]
    ) -> IoTHubDeviceClient:
        """Create a client from a device SAS token; the hub and device come from its ``sr``.

        Example:
            >>> client = IoTHubDeviceClient.from_sas_token(token)  # doctest: +SKIP

        Raises:
            ValueError: the token is scoped to a module (use :class:`IoTHubModuleClient`).
            CredentialError: the token is malformed or its scope names no device.
        """
        hostname, device_id, module_id = _identity_from_sas_token(sas_token, options)
        if module_id is not None:
            raise ValueError("the SAS token is scoped to a module: use IoTHubModuleClient.from_sas_token")
        return cls(
            hostname=hostname, device_id=device_id, sas_token=sas_token, renew_sas_token=renew_sas_token, **options
        )

    def cloud_messages(self, *, ack: AckMode = "auto") -> AsyncIterator[Message]:
        """Iterate over cloud-to-device messages.

        With ``ack="auto"`` (the default) a message is acknowledged to the hub (completed) when the
        loop takes it, so a crash while processing it loses it. With ``ack="manual"`` the
        application calls ``await message.acknowledge()`` once it has processed the message; until
        then the hub keeps it, and delivers it again on the next connection if this one ends first
        -- at-least-once, so a message may be processed twice (IoT Hub's ``MaxDeliveryCount``,
        10 by default, then dead-letters it). Up to ``inbound_buffer_size`` messages wait for the
        loop; past that they stay unacknowledged (reported on :meth:`errors`) and the hub
        redelivers them after the next reconnect. Several loops share the messages: each message
        goes to one of them.

        Example:
            >>> async def receive(client):
            ...     async for message in client.cloud_messages(ack="manual"):
            ...         await save(message.body)
            ...         await message.acknowledge()
        """
        manual = _manual_ack(ack)
        return self._require_session().cloud_messages(manual_ack=manual)

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

    @classmethod
    async def from_provisioning(
        cls,
        provisioning: ProvisioningClient,
        *,
        payload: Any = None,
        register_timeout: float = 60.0,
        reprovision: bool = False,
        **options: Unpack[ClientOptions],
    ) -> ProvisionedDeviceClient:
        """Register with the Device Provisioning Service, then return a client for the assigned hub.

        The client (not yet open) connects to the hub and device id DPS assigned, with the
        credential ``provisioning`` holds: its key (for an enrollment group, the derived one) or
        its certificate. The connection options of ``provisioning`` (``port``, ``websockets``,
        ``proxy``, ``ssl_context``, ``transport``, ``model_id`` …) apply to the hub too unless
        ``options`` says otherwise; the result is in ``client.registration``.

        Args:
            provisioning: a :class:`~aioiothub.ProvisioningClient`, open or not (it is opened
                for the registration when it is not).
            payload: the registration payload (see :meth:`ProvisioningClient.register`).
            register_timeout: seconds the registration may take.
            reprovision: register again, once, when the hub refuses the credential as the client
                connects (the device was moved or deleted); off by default.
            **options: hub client options, as for the constructor.

        Raises:
            ServiceError, AuthenticationError, TimeoutError: as
                :meth:`ProvisioningClient.register` and entering it raise them.

        Example:
            >>> async def main(provisioning):
            ...     async with await IoTHubDeviceClient.from_provisioning(provisioning) as client:
            ...         await client.send_message({"temperature": 21.5})
        """
        from aioiothub.provisioned import provision_device_client

        return await provision_device_client(
            provisioning, payload=payload, register_timeout=register_timeout, reprovision=reprovision, options=options
        )


class IoTHubModuleClient(_HubClient):
    """An IoT Hub module identity (also an IoT Edge module): telemetry, outputs, inputs, twin, methods.

    Example:
        >>> async def main(connection_string):
        ...     async with IoTHubModuleClient.from_connection_string(connection_string) as module:
        ...         await module.send_message_to_output({"ok": True}, "output1")
    """

    def __init__(
        self,
        *,
        hostname: str,
        device_id: str,
        module_id: str | None = None,
        shared_access_key: str | None = None,
        sas_token: str | None = None,
        renew_sas_token: TokenRenewer | None = None,
        x509: X509Credential | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        """Create a module client (it connects when entered with ``async with``).

        Args:
            hostname: the hub, e.g. ``myhub.azure-devices.net``.
            device_id: the device the module belongs to.
            module_id: the module identity (required).
            shared_access_key: the module's key.
            sas_token: a SAS token made elsewhere.
            renew_sas_token: called for a new token before ``sas_token`` expires.
            x509: a client certificate and key.
            **options: see :class:`~aioiothub.options.ClientOptions`.

        Raises:
            TypeError, ValueError: an argument is invalid (``module_id`` missing, …); the message
                names it.
            CredentialError: the key, token or certificate cannot be used.
        """
        if module_id is None:
            raise ValueError("module_id is required for IoTHubModuleClient")
        super().__init__(
            build_settings(
                hostname=hostname,
                device_id=device_id,
                module_id=module_id,
                shared_access_key=shared_access_key,
                sas_token=sas_token,
                renew_sas_token=renew_sas_token,
                x509=x509,
                options=options,
            )
        )

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        x509: X509Credential | None = None,
        renew_sas_token: TokenRenewer | None = None,
        **options: Unpack[ClientOptions],
    ) -> IoTHubModuleClient:
        """Create a client from a module connection string (with ``ModuleId=…``)."""
        identity = _identity_from_connection_string(connection_string, x509, options)
        if identity["module_id"] is None:
            raise ValueError("the connection string has no ModuleId: use IoTHubDeviceClient")
        return cls(**identity, x509=x509, renew_sas_token=renew_sas_token, **options)

    @classmethod
    def from_sas_token(
        cls, sas_token: str, *, renew_sas_token: TokenRenewer | None = None, **options: Unpack[ClientOptions]
    ) -> IoTHubModuleClient:
        """Create a client from a module SAS token; the hub, device and module come from its ``sr``.

        Raises:
            ValueError: the token is scoped to a device, not a module (use :class:`IoTHubDeviceClient`).
            CredentialError: the token is malformed or its scope names no module.
        """
        hostname, device_id, module_id = _identity_from_sas_token(sas_token, options)
        if module_id is None:
            raise ValueError("the SAS token is scoped to a device: use IoTHubDeviceClient.from_sas_token")
        return cls(
            hostname=hostname,
            device_id=device_id,
            module_id=module_id,
            sas_token=sas_token,
            renew_sas_token=renew_sas_token,
            **options,
        )

    async def send_message_to_output(self, message: MessageLike, output_name: str, *, qos: int = 1) -> None:
        """Send a message on an IoT Edge output (``$.on``); otherwise like :meth:`send_message`."""
        if not isinstance(output_name, str) or not output_name:
            raise ValueError("output_name must be a non-empty string")
        await self._send(message, qos, output_name)

    def input_messages(self, input_name: str | None = None, *, ack: AckMode = "auto") -> AsyncIterator[Message]:
        """Iterate over messages routed to this module's inputs (all of them, or one by name).

        Each message has ``input_name`` set; ``ack`` works as for
        :meth:`IoTHubDeviceClient.cloud_messages`.
        """
        if input_name is not None and (not isinstance(input_name, str) or not input_name):
            raise ValueError("input_name must be a non-empty string or None")
        manual = _manual_ack(ack)
        return self._require_session().input_messages(input_name, manual_ack=manual)

    # ------------------------------------------- IoT Edge (aioiothub.edge, module_methods)

    @classmethod
    async def from_edge_environment(
        cls, *, environ: Mapping[str, str] | None = None, **options: Unpack[ClientOptions]
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
        arguments = await edge.edge_client_options(environ, dict(options))
        client = cls.__new__(cls)
        _HubClient.__init__(client, build_settings(**arguments))
        return client

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
