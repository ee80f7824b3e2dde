"""The module client: :class:`IoTHubModuleClient`, an IoT Hub module identity (also an IoT Edge module).

On top of what every identity can do (:class:`~aioiothub._client.hub_client.HubClient`:
telemetry, twin, direct methods, connection state) a module sends to named outputs, receives messages routed
to its inputs, can be created from the IoT Edge runtime's environment (:mod:`aioiothub._https.edge`) and
invokes direct methods on other devices and modules through the Edge gateway
(:mod:`aioiothub._https.module_methods`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Unpack

from aioiothub._auth.credentials import X509Credential
from aioiothub._client.hub_client import (
    AckMode,
    HubClient,
    MessageLike,
    identity_from_connection_string,
    identity_from_sas_token_argument,
    manual_ack,
)
from aioiothub._client.settings import TokenRenewer, build_settings
from aioiothub._https import edge, module_methods
from aioiothub._https.http import HttpSettings
from aioiothub._session.methods import MethodResult
from aioiothub.message import Message
from aioiothub.options import ClientOptions

__all__ = ["IoTHubModuleClient"]


class IoTHubModuleClient(HubClient):
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
        identity = identity_from_connection_string(connection_string, x509, options)
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
        hostname, device_id, module_id = identity_from_sas_token_argument(sas_token, options)
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
        manual = manual_ack(ack)
        return self._require_session().input_messages(input_name, manual_ack=manual)

    # ------------------------------------------- IoT Edge (aioiothub._https.edge, module_methods)

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
        return cls.from_settings(build_settings(**arguments))

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
