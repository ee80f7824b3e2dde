"""The Device Provisioning Service (DPS) client: register a device, learn its hub and device id.

:class:`ProvisioningClient` drives the sans-IO
:class:`~aioiothub.protocol.provisioning.RegistrationProtocol` over one MQTT connection of the
transport the ``transport=`` option names, the way :class:`~aioiothub._session.session.HubSession` drives the
hub protocol: the protocol decides what to send and what an answer means, this module sends,
waits (``retry-after``) and keeps the deadline.

Example:
    >>> async def provision(group_key):
    ...     client = ProvisioningClient.from_enrollment_group_key(
    ...         id_scope="0ne00000000", registration_id="sensor-1", group_key=group_key
    ...     )
    ...     async with client:
    ...         result = await client.register()
    ...     print(result.assigned_hub, result.device_id)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack, cast

import anyio

from aioiothub._auth.credentials import TokenCredential, X509Credential, derive_device_key
from aioiothub._client.settings import build_settings
from aioiothub._provisioning.registration import RegistrationResult, refusal_error, with_model_id
from aioiothub._session.session import SessionSettings
from aioiothub.exceptions import AuthenticationError, ProtocolError
from aioiothub.options import ClientOptions, ProxyOptions, require_positive_number
from aioiothub.protocol.connect import dps_username
from aioiothub.protocol.device import OutboundPublish
from aioiothub.protocol.provisioning import (
    RegistrationAssigned,
    RegistrationEvent,
    RegistrationProtocol,
    RetryLater,
)
from aioiothub.protocol.sas import dps_resource_uri
from aioiothub.protocol.topics import DPS_RESPONSE_SUBSCRIPTION
from aioiothub.transports.base import ConnectParameters, InboundPublish, Transport

__all__ = [
    "DEFAULT_REGISTER_TIMEOUT",
    "GLOBAL_PROVISIONING_HOST",
    "ProvisioningClient",
    "ProvisioningOptions",
    "RegistrationResult",
]

_log = logging.getLogger("aioiothub")

GLOBAL_PROVISIONING_HOST = "global.azure-devices-provisioning.net"
"""The public DPS endpoint every device may use."""

DEFAULT_REGISTER_TIMEOUT = 60.0
"""Seconds :meth:`ProvisioningClient.register` waits for a final answer by default."""


class ProvisioningOptions(TypedDict, total=False):
    """Keyword options of :class:`ProvisioningClient` (all optional), named as the hub clients name them.

    Attributes:
        port: the DPS port; 8883, or 443 with ``websockets=True``.
        websockets: MQTT over WebSocket on port 443.
        proxy: an HTTP or SOCKS proxy (:class:`~aioiothub.ProxyOptions`).
        ssl_context: TLS settings (a custom CA); TLS 1.2 or newer. With ``x509`` the client
            certificate is loaded into it.
        product_info: appended to the client version DPS sees.
        model_id: a Plug and Play model id (``dtmi:…``), sent to DPS as ``{"modelId": ...}`` in the
            registration payload.
        keepalive: MQTT keep-alive in seconds; default 60.
        sas_ttl: lifetime in seconds of the SAS token signed with the key; default 3600.
        request_timeout: seconds for connecting (TCP, TLS, CONNACK, SUBACK); default 30.
        transport: ``"aiomqtt"`` (the default) or another name ``transport=`` accepts.
    """

    port: int
    websockets: bool
    proxy: ProxyOptions | None
    ssl_context: ssl.SSLContext | None
    product_info: str | None
    model_id: str | None
    keepalive: int
    sas_ttl: int
    request_timeout: float
    transport: str


_OPTION_NAMES = ProvisioningOptions.__optional_keys__


class ProvisioningClient:
    """A device's registration with the Device Provisioning Service, over one MQTT connection.

    Build it with :meth:`from_symmetric_key` (an individual enrollment),
    :meth:`from_enrollment_group_key` (an enrollment group: the device key is derived from the
    registration id) or :meth:`from_x509_certificate`; enter it with ``async with`` (connects and
    subscribes), then :meth:`register`.

    Example:
        >>> async def provision(key):
        ...     async with ProvisioningClient.from_symmetric_key(
        ...         id_scope="0ne00000000", registration_id="dev1", symmetric_key=key
        ...     ) as client:
        ...         return await client.register({"site": "plant-7"})

    Args:
        id_scope: the DPS instance's id scope (``0ne…``).
        registration_id: the registration id (IoT Hub identifier rules).
        symmetric_key: the device's key (individual enrollment, or derived from a group key).
        x509: the device's certificate and key, with any chain (CN = registration id).
        provisioning_host: the DPS endpoint; the global one by default.
        **options: see :class:`ProvisioningOptions`.

    Raises:
        TypeError, ValueError: an argument is invalid; the message names it. Exactly one of
            ``symmetric_key`` and ``x509`` must be given.
        CredentialError: the key or certificate cannot be used.
    """

    def __init__(
        self,
        *,
        id_scope: str,
        registration_id: str,
        symmetric_key: str | None = None,
        x509: X509Credential | None = None,
        provisioning_host: str = GLOBAL_PROVISIONING_HOST,
        **options: Unpack[ProvisioningOptions],
    ) -> None:
        unknown = options.keys() - _OPTION_NAMES
        if unknown:
            raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
        self._settings: SessionSettings = build_settings(
            hostname=provisioning_host,
            device_id=registration_id,
            module_id=None,
            shared_access_key=symmetric_key,
            sas_token=None,
            renew_sas_token=None,
            x509=x509,
            options=cast(ClientOptions, dict(options)),
            hostname_argument="provisioning_host",
        )
        self._username = dps_username(id_scope, registration_id, client_version=self._settings.product_info)
        if x509 is not None and x509.common_name != registration_id:
            raise ValueError(
                f"registration_id {registration_id!r} must be the certificate's common name ({x509.common_name!r})"
            )
        self.id_scope = id_scope
        self.registration_id = registration_id
        self.provisioning_host = provisioning_host
        self._symmetric_key = symmetric_key
        self._x509 = x509
        self._options = dict(options)
        self._protocol = RegistrationProtocol(registration_id)
        self._connection: Transport | None = None
        self._waiter: asyncio.Future[RegistrationEvent] | None = None
        self._registering = False

    # -------------------------------------------------------------- factories

    @classmethod
    def from_symmetric_key(
        cls,
        *,
        id_scope: str,
        registration_id: str,
        symmetric_key: str,
        provisioning_host: str = GLOBAL_PROVISIONING_HOST,
        **options: Unpack[ProvisioningOptions],
    ) -> ProvisioningClient:
        """A client for an individual enrollment with a symmetric key (SAS attestation)."""
        return cls(
            id_scope=id_scope,
            registration_id=registration_id,
            symmetric_key=symmetric_key,
            provisioning_host=provisioning_host,
            **options,
        )

    @classmethod
    def from_enrollment_group_key(
        cls,
        *,
        id_scope: str,
        registration_id: str,
        group_key: str,
        provisioning_host: str = GLOBAL_PROVISIONING_HOST,
        **options: Unpack[ProvisioningOptions],
    ) -> ProvisioningClient:
        """A client for a device of a symmetric-key enrollment group.

        The device key is ``derive_device_key(group_key, registration_id)``; the group key itself
        never leaves this call (ship devices the derived key where you can).
        """
        return cls(
            id_scope=id_scope,
            registration_id=registration_id,
            symmetric_key=derive_device_key(group_key, registration_id),
            provisioning_host=provisioning_host,
            **options,
        )

    @classmethod
    def from_x509_certificate(
        cls,
        *,
        id_scope: str,
        x509: X509Credential,
        registration_id: str | None = None,
        provisioning_host: str = GLOBAL_PROVISIONING_HOST,
        **options: Unpack[ProvisioningOptions],
    ) -> ProvisioningClient:
        """A client for an X.509 enrollment (individual, or a group with a CA certificate).

        ``registration_id`` defaults to the certificate's common name, which DPS requires it to be.
        """
        if not isinstance(x509, X509Credential):
            raise TypeError("x509 must be an aioiothub.X509Credential")
        if registration_id is None:
            if x509.common_name is None:
                raise ValueError("x509: the certificate has no common name to use as registration_id")
            registration_id = x509.common_name
        return cls(
            id_scope=id_scope,
            registration_id=registration_id,
            x509=x509,
            provisioning_host=provisioning_host,
            **options,
        )

    # --------------------------------------------------------------- what the hub client reuses

    @property
    def device_key(self) -> str | None:
        """The key the device authenticates with (to DPS, then to its hub), or ``None`` for X.509."""
        return self._symmetric_key

    @property
    def x509(self) -> X509Credential | None:
        """The device certificate, or ``None`` for a symmetric key."""
        return self._x509

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options given (a copy); the hub connection inherits them."""
        return dict(self._options)

    def __repr__(self) -> str:
        return (
            f"ProvisioningClient(provisioning_host={self.provisioning_host!r}, id_scope={self.id_scope!r}, "
            f"registration_id={self.registration_id!r}, credential={self._settings.credential!r})"
        )

    # -------------------------------------------------------------- lifecycle

    @property
    def connected(self) -> bool:
        """Whether the connection to DPS is up."""
        return self._connection is not None and self._connection.connected

    async def __aenter__(self) -> Self:
        if self._connection is not None:
            raise RuntimeError("the provisioning client is already open")
        parameters = await self._connect_parameters()
        connection: Transport | None = None

        def on_message(inbound: InboundPublish) -> None:
            # Bound to this connection: what arrives on it is acknowledged on it.
            assert connection is not None
            self._dispatch(inbound, connection)

        connection = self._settings.transport(parameters, on_message)
        try:
            await connection.__aenter__()
        except AuthenticationError as exc:
            raise AuthenticationError(
                f"DPS refused registration {self.registration_id!r} in id scope {self.id_scope!r} ({exc}): "
                "check the id scope, the registration id and the key or certificate",
                return_code=exc.return_code,
            ) from None
        try:
            await connection.subscribe([(DPS_RESPONSE_SUBSCRIPTION, 1)])
        except BaseException:
            await connection.__aexit__(None, None, None)
            raise
        self._connection = connection
        _log.info("connected to DPS at %s as %s", parameters.host, self.registration_id)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.__aexit__(exc_type, exc, tb)

    async def _connect_parameters(self) -> ConnectParameters:
        settings = self._settings
        credential = settings.credential
        password: str | None = None
        if not isinstance(credential, X509Credential):
            token_credential: TokenCredential = credential
            grant = await token_credential.get_token(dps_resource_uri(self.id_scope, self.registration_id), time.time())
            password = grant.token
        return ConnectParameters(
            host=settings.connect_host,
            port=settings.port,
            client_id=self.registration_id,
            username=self._username,
            password=password,
            ssl_context=settings.ssl_context,
            keepalive=settings.keepalive,
            # DPS keeps no session: whatever the flag, every connection starts afresh.
            clean_session=True,
            websockets=settings.websockets,
            max_in_flight=1,
            connect_timeout=settings.request_timeout,
            proxy=settings.proxy,
        )

    # ------------------------------------------------------------ registration

    async def register(
        self,
        payload: Any = None,
        *,
        timeout: float = DEFAULT_REGISTER_TIMEOUT,  # noqa: ASYNC109 - the whole registration's deadline
    ) -> RegistrationResult:
        """Register the device and wait until DPS has assigned it to a hub.

        DPS answers "assigning" first; the client polls after each ``retry-after`` (2 s when DPS
        gives none), and retries throttled (429) and failed (5xx) requests the same way, all
        within ``timeout``.

        Args:
            payload: JSON data for a custom allocation policy; with the ``model_id`` option it
                must be a dict (or ``None``) and gets ``"modelId"`` added.
            timeout: seconds for the whole registration, polls and retries included.

        Returns:
            Where the device is assigned, and as which device id.

        Raises:
            ServiceError: DPS refused the registration (``failed``, ``disabled``, or an error
                status); ``status``, ``error_code`` and ``tracking_id`` say why.
            TimeoutError: no final answer within ``timeout``.
            ConnectionLostError: the connection to DPS dropped.
            ProtocolError: DPS sent an answer that cannot be parsed.
            RuntimeError: the client is not open, or another registration is in progress on it.

        Example:
            >>> async def register(client):
            ...     result = await client.register({"site": "plant-7"}, timeout=30)
            ...     return result.assigned_hub, result.device_id
        """
        connection = self._connection
        if connection is None:
            raise RuntimeError("the provisioning client is not open: use it as 'async with client:'")
        timeout = require_positive_number(timeout, "timeout")
        body = with_model_id(payload, self._settings.model_id)
        if self._registering:
            raise RuntimeError("a registration is already in progress on this client")
        self._registering = True
        last_answer = "no answer yet"
        try:
            with anyio.fail_after(timeout):
                publish = self._protocol.begin(body)
                while True:
                    event = await self._round_trip(connection, publish)
                    if isinstance(event, RetryLater):
                        last_answer = f"last answer {event.status} {event.operation.status}"
                        _log.info(
                            "DPS answered %d (%s); asking again in %g s",
                            event.status,
                            event.operation.status,
                            event.delay,
                        )
                        await anyio.sleep(event.delay)
                        publish = self._protocol.next_request()
                    elif isinstance(event, RegistrationAssigned):
                        return RegistrationResult.from_operation(event.operation)
                    else:
                        raise refusal_error(self.registration_id, event)
        except TimeoutError:
            raise TimeoutError(
                f"DPS registration of {self.registration_id!r} did not complete within {timeout:g} s ({last_answer})"
            ) from None
        finally:
            self._protocol.abandon()
            self._waiter = None
            self._registering = False

    async def _round_trip(self, connection: Transport, publish: OutboundPublish) -> RegistrationEvent:
        waiter: asyncio.Future[RegistrationEvent] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        acknowledged = connection.publish(publish.topic, publish.payload, publish.qos)
        # The answer usually comes before the PUBACK matters; a PUBACK lost with the connection is
        # reported through ``lost`` below, so its own failure needs no second report.
        acknowledged.add_done_callback(_consume)
        await asyncio.wait((waiter, connection.lost), return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            return waiter.result()
        await connection.lost  # raises ConnectionLostError
        raise AssertionError("unreachable: the connection ended without an error")

    def _dispatch(self, inbound: InboundPublish, connection: Transport) -> None:
        waiter = self._waiter
        try:
            event = self._protocol.receive(inbound.topic, inbound.payload)
        except ProtocolError as exc:
            if waiter is not None and not waiter.done() and self._protocol.pending_request_id is None:
                waiter.set_exception(exc)
            else:
                _log.warning("ignored a malformed message from DPS on %r: %s", inbound.topic, exc)
        else:
            if event is not None and waiter is not None and not waiter.done():
                waiter.set_result(event)
        connection.acknowledge(inbound)


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
