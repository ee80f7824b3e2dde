"""Client constructor arguments turned into validated :class:`~aioiothub._session.session.SessionSettings`.

Every check names the argument it refuses; nothing is connected or sent here.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aioiothub._auth.credentials import (
    ConnectionString,
    Credential,
    SasTokenCredential,
    SharedAccessKeyCredential,
    TokenCredential,
    X509Credential,
    parse_sas_token,
)
from aioiothub._outbox.outbox import Outbox
from aioiothub._session.session import SessionSettings
from aioiothub.exceptions import CredentialError
from aioiothub.message import Message
from aioiothub.options import (
    ClientOptions,
    ProxyOptions,
    ReconnectPolicy,
    require_positive_int,
    require_positive_number,
)
from aioiothub.protocol.connect import MAX_KEEPALIVE, MQTT_PORT, WEBSOCKET_PORT, product_info_string, validate_identity
from aioiothub.protocol.connection_string import check_host_name
from aioiothub.protocol.device import telemetry_publish
from aioiothub.transports import transport_factory, validate_transport_options
from aioiothub.transports.base import TransportFactory, WillMessage

__all__ = ["build_settings", "default_ssl_context", "identity_from_sas_token", "options_from_connection_string"]

_OPTION_NAMES = ClientOptions.__optional_keys__
_default_ssl_context: ssl.SSLContext | None = None

TokenRenewer = Callable[[], str | Awaitable[str]]


def default_ssl_context() -> ssl.SSLContext:
    """The system trust store with TLS 1.2 or newer and hostname checks, shared by every client."""
    global _default_ssl_context
    if _default_ssl_context is None:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _default_ssl_context = context
    return _default_ssl_context


def _check_tls_floor(context: ssl.SSLContext) -> None:
    minimum = context.minimum_version
    # MINIMUM_SUPPORTED is a sentinel (-2) meaning "whatever OpenSSL allows", which may be TLS 1.0.
    if minimum == ssl.TLSVersion.MINIMUM_SUPPORTED or minimum < ssl.TLSVersion.TLSv1_2:
        raise ValueError(
            f"ssl_context allows {minimum.name}; IoT Hub requires TLS 1.2 or newer: set "
            "ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2"
        )


def _credential(
    shared_access_key: str | None,
    sas_token: str | None,
    renew_sas_token: TokenRenewer | None,
    x509: X509Credential | None,
    credential: TokenCredential | None,
    sas_ttl: int,
) -> Credential:
    given = [name for name, value in (("shared_access_key", shared_access_key), ("sas_token", sas_token),
                                      ("x509", x509), ("credential", credential)) if value is not None]
    if len(given) != 1:
        raise ValueError(
            "give exactly one of shared_access_key, sas_token or x509" + (f" (got {', '.join(given)})" if given else "")
        )
    if renew_sas_token is not None and sas_token is None:
        raise ValueError("renew_sas_token needs sas_token")
    if renew_sas_token is not None and not callable(renew_sas_token):
        raise TypeError("renew_sas_token must be callable")
    if credential is not None:
        return credential
    if shared_access_key is not None:
        return SharedAccessKeyCredential(shared_access_key, ttl=require_positive_int(sas_ttl, "sas_ttl"))
    if sas_token is not None:
        return SasTokenCredential(sas_token, renew=renew_sas_token)
    if not isinstance(x509, X509Credential):
        raise TypeError("x509 must be an aioiothub.X509Credential")
    return x509


def _reconnect_policy(reconnect: object) -> ReconnectPolicy | None:
    if reconnect is True:
        return ReconnectPolicy()
    if reconnect is False:
        return None
    if isinstance(reconnect, ReconnectPolicy):
        return reconnect
    raise TypeError("reconnect must be True, False or a ReconnectPolicy")


def _transport(choice: object, proxy: ProxyOptions | None, websockets: bool) -> TransportFactory:
    if isinstance(choice, str):
        validate_transport_options(choice, proxy=proxy, websockets=websockets)
        return transport_factory(choice)
    if callable(choice):
        # A transport factory of the application's (aioiothub.testing.MemoryNetwork, say): it
        # builds a connection from the same ConnectParameters the named transports get.
        return cast(TransportFactory, choice)
    raise TypeError(
        f'transport must be "aiomqtt", "native" or a transport factory, not {type(choice).__name__}'
    )


def _will(will: object, device_id: str, module_id: str | None) -> WillMessage | None:
    if will is None:
        return None
    if not isinstance(will, Message):
        raise TypeError(f"will must be an aioiothub.Message, not {type(will).__name__}")
    try:
        publish = telemetry_publish(device_id, module_id, will.body, will.wire_properties(), qos=1)
    except ValueError as exc:
        raise ValueError(f"will: {exc}") from None
    return WillMessage(publish.topic, publish.payload, publish.qos)


def _outbox(outbox: object) -> Outbox | None:
    if outbox is None or isinstance(outbox, Outbox):
        return outbox
    if isinstance(outbox, str | os.PathLike):
        return Outbox(outbox)
    raise TypeError(f"outbox must be an aioiothub.Outbox, a path or None, not {type(outbox).__name__}")


def build_settings(
    *,
    hostname: str,
    device_id: str,
    module_id: str | None,
    shared_access_key: str | None = None,
    sas_token: str | None = None,
    renew_sas_token: TokenRenewer | None = None,
    x509: X509Credential | None = None,
    credential: TokenCredential | None = None,
    options: ClientOptions,
    hostname_argument: str = "hostname",
) -> SessionSettings:
    """Validate every argument of a client constructor.

    ``credential`` is for factories that bring their own token source (IoT Edge's workload API);
    the public constructors take the other three kinds. ``hostname_argument`` is what error
    messages call ``hostname`` (the provisioning client's is ``provisioning_host``).

    Raises:
        TypeError, ValueError: an argument is missing, of the wrong type or invalid; the message
            names it.
        CredentialError: the key, token or certificate cannot be used.
    """
    unknown = options.keys() - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
    if not isinstance(hostname, str) or not hostname:
        raise ValueError(f"{hostname_argument} must be a non-empty string")
    check_host_name(hostname, hostname_argument)
    validate_identity(device_id, "device_id")
    if module_id is not None:
        validate_identity(module_id, "module_id")
    chosen = _credential(shared_access_key, sas_token, renew_sas_token, x509, credential, options.get("sas_ttl", 3600))
    websockets = options.get("websockets", False)
    if not isinstance(websockets, bool):
        raise TypeError("websockets must be True or False")
    port = options.get("port", WEBSOCKET_PORT if websockets else MQTT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
    proxy = options.get("proxy")
    if proxy is not None and not isinstance(proxy, ProxyOptions):
        raise TypeError("proxy must be an aioiothub.ProxyOptions")
    ssl_context = options.get("ssl_context")
    if ssl_context is not None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError("ssl_context must be an ssl.SSLContext")
        _check_tls_floor(ssl_context)
    gateway_hostname = options.get("gateway_hostname")
    if gateway_hostname is not None and (not isinstance(gateway_hostname, str) or not gateway_hostname):
        raise ValueError("gateway_hostname must be a non-empty string")
    if gateway_hostname is not None:
        check_host_name(gateway_hostname, "gateway_hostname")
    model_id = options.get("model_id")
    if model_id is not None and (not isinstance(model_id, str) or not model_id.startswith("dtmi:")):
        raise ValueError(f"model_id must be a DTDL model id starting with 'dtmi:', not {model_id!r}")
    product_info = options.get("product_info")
    if product_info is not None and not isinstance(product_info, str):
        raise TypeError("product_info must be a string")
    clean_session = options.get("clean_session", False)
    if not isinstance(clean_session, bool):
        raise TypeError("clean_session must be True or False")
    if isinstance(chosen, X509Credential):
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        chosen.load_into(ssl_context)
    return SessionSettings(
        hostname=hostname,
        device_id=device_id,
        module_id=module_id,
        credential=chosen,
        connect_host=gateway_hostname or hostname,
        port=port,
        websockets=websockets,
        ssl_context=ssl_context or default_ssl_context(),
        proxy=proxy,
        product_info=product_info_string(product_info),
        model_id=model_id,
        keepalive=require_positive_int(options.get("keepalive", 60), "keepalive", maximum=MAX_KEEPALIVE),
        request_timeout=require_positive_number(options.get("request_timeout", 30.0), "request_timeout"),
        reconnect=_reconnect_policy(options.get("reconnect", True)),
        max_in_flight=require_positive_int(options.get("max_in_flight", 128), "max_in_flight", maximum=65535),
        inbound_buffer_size=require_positive_int(options.get("inbound_buffer_size", 256), "inbound_buffer_size"),
        transport=_transport(options.get("transport", "aiomqtt"), proxy, websockets),
        liveness_timeout=require_positive_number(options.get("liveness_timeout", 10.0), "liveness_timeout"),
        clean_session=clean_session,
        will=_will(options.get("will"), device_id, module_id),
        outbox=_outbox(options.get("outbox")),
    )


def identity_from_sas_token(sas_token: str) -> tuple[str, str, str | None]:
    """The hub host name, device id and module id a device or module SAS token is scoped to.

    Example:
        >>> token = "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fdev1&sig=c2ln&se=2000000000"
        >>> identity_from_sas_token(token)
        ('hub.example.net', 'dev1', None)

    Raises:
        TypeError: ``sas_token`` is not a string.
        CredentialError: the token is malformed, or its ``sr`` does not name a device or module
            (``{hub}/devices/{deviceId}[/modules/{moduleId}]``).
    """
    scope = parse_sas_token(sas_token).resource_uri.rstrip("/")
    parts = scope.split("/")
    try:
        if len(parts) == 3 and parts[1] == "devices":
            hostname, device_id, module_id = parts[0], parts[2], None
        elif len(parts) == 5 and parts[1] == "devices" and parts[3] == "modules":
            hostname, device_id, module_id = parts[0], parts[2], parts[4]
        else:
            raise ValueError("not an identity's scope")
        if not hostname:
            raise ValueError("no host name")
        validate_identity(device_id, "device_id")
        if module_id is not None:
            validate_identity(module_id, "module_id")
    except (TypeError, ValueError):
        raise CredentialError(
            f"the SAS token's scope {scope!r} does not name a device or module: expected "
            "{hub}/devices/{deviceId} or {hub}/devices/{deviceId}/modules/{moduleId}"
        ) from None
    return hostname, device_id, module_id


def options_from_connection_string(connection_string: str, *, x509: X509Credential | None) -> dict[str, Any]:
    """The identity and credential arguments a device or module connection string stands for.

    Raises:
        ValueError: it is a service connection string, or it says ``x509=true`` and no ``x509``
            credential was given.
        CredentialError: it is malformed.
    """
    parsed = ConnectionString.parse(connection_string)
    if parsed.shared_access_key_name is not None:
        raise ValueError(
            "the connection string names a shared access policy (SharedAccessKeyName): that is a "
            "service connection string, not a device's"
        )
    if parsed.x509 and x509 is None:
        raise ValueError("the connection string says x509=true: pass x509=X509Credential(cert_file, key_file)")
    return {
        "hostname": parsed.host_name,
        "device_id": parsed.device_id,
        "module_id": parsed.module_id,
        "shared_access_key": parsed.shared_access_key,
        "sas_token": parsed.shared_access_signature,
        "gateway_hostname": parsed.gateway_host_name,
    }
