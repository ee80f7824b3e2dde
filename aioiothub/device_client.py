"""The device client: :class:`IoTHubDeviceClient`, an IoT Hub device identity.

On top of what every identity can do (:class:`~aioiothub._client.hub_client.HubClient`:
telemetry, twin, direct methods, connection state) a device receives cloud-to-device messages, uploads files
through the hub's storage account (:mod:`aioiothub._https.upload`) and can be created from a Device
Provisioning Service registration (the client is given a
:class:`~aioiothub._provisioning.provider.ProvisionedIdentity`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Unpack

from aioiothub._auth.credentials import X509Credential
from aioiothub._client.hub_client import (
    AckMode,
    HubClient,
    identity_from_connection_string,
    identity_from_sas_token_argument,
    manual_ack,
)
from aioiothub._client.settings import TokenRenewer, build_settings
from aioiothub._https import upload
from aioiothub._https.http import HttpSettings
from aioiothub._https.upload import BlobStorageInfo, ProgressCallback, UploadSource
from aioiothub._provisioning.client import ProvisioningClient
from aioiothub._provisioning.provider import ProvisionedIdentity, provision
from aioiothub._provisioning.registration import RegistrationResult
from aioiothub.message import Message
from aioiothub.options import ClientOptions

__all__ = ["IoTHubDeviceClient"]


class IoTHubDeviceClient(HubClient):
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
        identity = identity_from_connection_string(connection_string, x509, options)
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
        hostname, device_id, module_id = identity_from_sas_token_argument(sas_token, options)
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
        manual = manual_ack(ack)
        return self._require_session().cloud_messages(manual_ack=manual)

    # ---------------------------------------------- file upload (aioiothub._https.upload)

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
    ) -> IoTHubDeviceClient:
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
        identity = await provision(
            provisioning, payload=payload, register_timeout=register_timeout, reprovision=reprovision, options=options
        )
        return cls.from_settings(identity.settings(), provider=identity)

    @property
    def registration(self) -> RegistrationResult | None:
        """The DPS registration the client connects with (:meth:`from_provisioning`), else ``None``."""
        provider = self._provider
        return provider.registration if isinstance(provider, ProvisionedIdentity) else None
