"""MQTT CONNECT identity fields for IoT Hub and DPS: client ids, usernames, identifier rules.

IoT Hub identifies a connection by its client id (``{deviceId}`` or ``{deviceId}/{moduleId}``) and its
username (``{hostname}/{deviceId}[/{moduleId}]/?api-version=...``). Identifiers are never
percent-encoded; only the values of the query parameters are. DPS uses the registration id as the
client id and ``{idScope}/registrations/{registrationId}/api-version=...`` -- with no ``?`` -- as the
username.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioiothub._version import __version__
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.properties import decode_property_bag, quote_component

__all__ = [
    "API_VERSION",
    "CONNACK_ACCEPTED",
    "CONNACK_BAD_CREDENTIALS",
    "CONNACK_IDENTIFIER_REJECTED",
    "CONNACK_NOT_AUTHORIZED",
    "CONNACK_REASONS",
    "CONNACK_SERVER_UNAVAILABLE",
    "CONNACK_UNACCEPTABLE_PROTOCOL",
    "DEFAULT_PRODUCT_INFO",
    "DPS_API_VERSION",
    "MAX_IDENTITY_LENGTH",
    "MAX_KEEPALIVE",
    "MQTT_PORT",
    "WEBSOCKET_PATH",
    "WEBSOCKET_PORT",
    "DpsUsername",
    "IdentityUsername",
    "client_id",
    "dps_username",
    "parse_dps_username",
    "parse_username",
    "product_info_string",
    "username",
    "validate_identity",
]

API_VERSION = "2021-04-12"
"""The IoT Hub MQTT api-version sent in the username."""

DPS_API_VERSION = "2019-03-31"
"""The DPS MQTT api-version sent in the username."""

DEFAULT_PRODUCT_INFO = f"aioiothub/{__version__}"
"""The ``DeviceClientType`` this library announces."""

MAX_IDENTITY_LENGTH = 128
"""Longest device, module or registration id IoT Hub accepts."""

MAX_KEEPALIVE = 1177
"""Longest keep-alive (seconds) IoT Hub accepts from a client; it allows 1.5 x the client's value."""

MQTT_PORT = 8883
"""MQTT over TLS."""

WEBSOCKET_PORT = 443
"""MQTT over WebSocket over TLS, and the hub's HTTPS endpoints."""

WEBSOCKET_PATH = "/$iothub/websocket"
"""The HTTP path of the MQTT-over-WebSocket upgrade (subprotocol ``mqtt``)."""

# MQTT 3.1.1 CONNACK return codes, as IoT Hub uses them (protocol.md section 1).
CONNACK_ACCEPTED = 0
CONNACK_UNACCEPTABLE_PROTOCOL = 1
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_SERVER_UNAVAILABLE = 3
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5

CONNACK_REASONS = {
    CONNACK_ACCEPTED: "accepted",
    CONNACK_UNACCEPTABLE_PROTOCOL: "unacceptable protocol version",
    CONNACK_IDENTIFIER_REJECTED: "identifier rejected",
    CONNACK_SERVER_UNAVAILABLE: "server unavailable",
    CONNACK_BAD_CREDENTIALS: "bad user name or password",
    CONNACK_NOT_AUTHORIZED: "not authorized",
}
"""What each CONNACK return code means."""

# Plug and Play model ids were introduced with this api-version; older ones ignore or reject them.
_MODEL_ID_API_VERSION = "2020-09-30"

_IDENTITY_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.+%_#*?!(),=@;$':"


def validate_identity(value: object, argument: str) -> None:
    """Check a device, module or registration id against IoT Hub's identifier rules.

    Identifiers are 1 to 128 characters of ASCII letters, digits and ``- . + % _ # * ? ! ( ) , = @ ; $ '``
    and ``:``. They are case-sensitive and never percent-encoded, so ``/`` is not allowed.

    Args:
        value: the identifier to check.
        argument: the parameter name used in error messages.

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: ``value`` is empty, too long, or contains a character outside the allowed set.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument}: expected str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{argument}: must not be empty")
    if len(value) > MAX_IDENTITY_LENGTH:
        raise ValueError(f"{argument}: longer than {MAX_IDENTITY_LENGTH} characters")
    # rstrip with the allowed set leaves text behind only when some character is not allowed.
    if value.rstrip(_IDENTITY_CHARACTERS):
        bad = next(character for character in value if character not in _IDENTITY_CHARACTERS)
        raise ValueError(f"{argument}: {value!r} contains {bad!r}, which an IoT Hub identifier may not contain")


def _validate_hostname(hostname: object, argument: str = "hostname") -> str:
    if not isinstance(hostname, str):
        raise TypeError(f"{argument}: expected str, got {type(hostname).__name__}")
    if not hostname or not hostname.isascii() or not hostname.isprintable():
        raise ValueError(f"{argument}: {hostname!r} is not a host name")
    if "/" in hostname or " " in hostname:
        raise ValueError(f"{argument}: {hostname!r} must not contain '/' or spaces")
    return hostname


def _validate_text(value: object, argument: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument}: expected str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{argument}: must not be empty")
    return value


def client_id(device_id: str, module_id: str | None = None) -> str:
    """Build the MQTT client id for a device or module (also a DPS registration id).

    Args:
        device_id: the device id.
        module_id: the module id, for a module identity.

    Returns:
        ``device_id`` or ``device_id/module_id``.

    Raises:
        TypeError, ValueError: an id breaks the identifier rules of :func:`validate_identity`.
    """
    validate_identity(device_id, "device_id")
    if module_id is None:
        return device_id
    validate_identity(module_id, "module_id")
    return f"{device_id}/{module_id}"


def product_info_string(user_suffix: str | None) -> str:
    """Build the ``DeviceClientType`` value: this library's name and version, then the caller's text.

    Args:
        user_suffix: extra product information supplied by the application, or ``None``.

    Returns:
        :data:`DEFAULT_PRODUCT_INFO`, followed by a space and ``user_suffix`` when one is given.

    Raises:
        TypeError: ``user_suffix`` is not a ``str`` or ``None``.
    """
    if user_suffix is None:
        return DEFAULT_PRODUCT_INFO
    if not isinstance(user_suffix, str):
        raise TypeError(f"user_suffix: expected str or None, got {type(user_suffix).__name__}")
    if not user_suffix:
        return DEFAULT_PRODUCT_INFO
    return f"{DEFAULT_PRODUCT_INFO} {user_suffix}"


def username(
    hostname: str,
    device_id: str,
    module_id: str | None = None,
    *,
    api_version: str = API_VERSION,
    product_info: str | None = None,
    model_id: str | None = None,
) -> str:
    """Build the MQTT username for an IoT Hub device or module connection.

    Args:
        hostname: the hub's host name, e.g. ``myhub.azure-devices.net``.
        device_id: the device id.
        module_id: the module id, for a module identity.
        api_version: the api-version to announce.
        product_info: the ``DeviceClientType`` value (percent-encoded here), or ``None`` to omit it.
        model_id: a Plug and Play model id (``dtmi:...``, percent-encoded here), or ``None``.

    Returns:
        ``{hostname}/{device_id}[/{module_id}]/?api-version=...[&DeviceClientType=...][&model-id=...]``.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or invalid; a model id needs
            api-version 2020-09-30 or later.
    """
    _validate_hostname(hostname)
    identity = client_id(device_id, module_id)
    text = f"{hostname}/{identity}/?api-version={quote_component(_validate_text(api_version, 'api_version'))}"
    if product_info is not None:
        text += f"&DeviceClientType={quote_component(_validate_text(product_info, 'product_info'))}"
    if model_id is not None:
        _validate_text(model_id, "model_id")
        if api_version < _MODEL_ID_API_VERSION:
            raise ValueError(f"model_id: needs api_version {_MODEL_ID_API_VERSION} or later, not {api_version}")
        text += f"&model-id={quote_component(model_id)}"
    return text


@dataclass(frozen=True, slots=True)
class IdentityUsername:
    """The fields of an IoT Hub username, as parsed by the hub.

    Attributes:
        hostname: the host name the device believes it connects to.
        device_id: the device id.
        module_id: the module id, or ``None`` for a device connection.
        api_version: the ``api-version`` parameter, or ``None`` when absent.
        product_info: the decoded ``DeviceClientType`` parameter, or ``None``.
        model_id: the decoded ``model-id`` parameter, or ``None``.
    """

    hostname: str
    device_id: str
    module_id: str | None
    api_version: str | None
    product_info: str | None
    model_id: str | None


def _parse_query(query: str, what: str, text: str) -> dict[str, str | None]:
    try:
        return decode_property_bag(query)
    except ProtocolError as exc:
        raise ProtocolError(f"malformed {what} {text!r}: {exc}") from None


def _check_identity(value: str, argument: str, what: str, text: str) -> None:
    try:
        validate_identity(value, argument)
    except ValueError as exc:
        raise ProtocolError(f"malformed {what} {text!r}: {exc}") from None


def parse_username(username: str) -> IdentityUsername:
    """Parse an IoT Hub username from a CONNECT packet (hub role).

    Query parameters may come in any order; unknown ones are ignored.

    Args:
        username: ``{hostname}/{deviceId}/?{query}`` or ``{hostname}/{deviceId}/{moduleId}/?{query}``.

    Returns:
        The parsed fields.

    Raises:
        ProtocolError: the username does not have that shape or an identifier is invalid.
    """
    segments = username.split("/", 3)
    module_id: str | None = None
    if len(segments) == 3:
        hostname, device_id, tail = segments
    elif len(segments) == 4:
        hostname, device_id, third, tail = segments
        # Ids may contain "?" but never "/", so "/?" right after the third segment marks a module;
        # otherwise the "/" belongs to an unencoded query value of a device username.
        if tail.startswith("?"):
            module_id = third
        else:
            tail = f"{third}/{tail}"
    else:
        raise ProtocolError(f"malformed IoT Hub username {username!r}")
    if not hostname or not tail.startswith("?"):
        raise ProtocolError(f"malformed IoT Hub username {username!r}")
    _check_identity(device_id, "device id", "IoT Hub username", username)
    if module_id is not None:
        _check_identity(module_id, "module id", "IoT Hub username", username)
    parameters = _parse_query(tail[1:], "IoT Hub username", username)
    return IdentityUsername(
        hostname=hostname,
        device_id=device_id,
        module_id=module_id,
        api_version=parameters.get("api-version"),
        product_info=parameters.get("DeviceClientType"),
        model_id=parameters.get("model-id"),
    )


def _validate_id_scope(id_scope: object) -> str:
    if not isinstance(id_scope, str):
        raise TypeError(f"id_scope: expected str, got {type(id_scope).__name__}")
    if not id_scope or not id_scope.isascii() or not id_scope.isalnum():
        raise ValueError(f"id_scope: {id_scope!r} is not a DPS id scope (ASCII letters and digits)")
    return id_scope


def dps_username(id_scope: str, registration_id: str, *, client_version: str | None = None) -> str:
    """Build the MQTT username for a DPS registration connection.

    Args:
        id_scope: the DPS id scope, e.g. ``0ne00000000``.
        registration_id: the registration id (also the client id).
        client_version: the ``ClientVersion`` value (percent-encoded here), or ``None`` to omit it.

    Returns:
        ``{id_scope}/registrations/{registration_id}/api-version=2019-03-31[&ClientVersion=...]``.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or invalid.
    """
    _validate_id_scope(id_scope)
    validate_identity(registration_id, "registration_id")
    text = f"{id_scope}/registrations/{registration_id}/api-version={DPS_API_VERSION}"
    if client_version is not None:
        text += f"&ClientVersion={quote_component(_validate_text(client_version, 'client_version'))}"
    return text


@dataclass(frozen=True, slots=True)
class DpsUsername:
    """The fields of a DPS username, as parsed by the provisioning service.

    Attributes:
        id_scope: the id scope.
        registration_id: the registration id.
        api_version: the ``api-version`` parameter, or ``None`` when absent.
        client_version: the decoded ``ClientVersion`` parameter, or ``None``.
    """

    id_scope: str
    registration_id: str
    api_version: str | None
    client_version: str | None


def parse_dps_username(username: str) -> DpsUsername:
    """Parse a DPS username from a CONNECT packet (hub role).

    A ``?`` before the parameters is tolerated though DPS clients do not send one.

    Args:
        username: ``{idScope}/registrations/{registrationId}/api-version=...[&ClientVersion=...]``.

    Returns:
        The parsed fields.

    Raises:
        ProtocolError: the username does not have that shape or an identifier is invalid.
    """
    segments = username.split("/", 3)
    if len(segments) != 4 or segments[1] != "registrations" or not segments[0]:
        raise ProtocolError(f"malformed DPS username {username!r}")
    id_scope, _, registration_id, query = segments
    _check_identity(registration_id, "registration id", "DPS username", username)
    parameters = _parse_query(query.removeprefix("?"), "DPS username", username)
    return DpsUsername(
        id_scope=id_scope,
        registration_id=registration_id,
        api_version=parameters.get("api-version"),
        client_version=parameters.get("ClientVersion"),
    )
