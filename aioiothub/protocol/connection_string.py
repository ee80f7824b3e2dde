"""Device and module connection strings (``HostName=...;DeviceId=...;SharedAccessKey=...``).

Accepts every key the official SDKs accept. Key names are case-sensitive, as in the official Python SDK;
each ``;``-separated segment is split at its first ``=`` because base64 keys and SAS tokens contain ``=``.
The key and signature values are not checked here: the credential built from them does that.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionString", "check_host_name"]

_HOST_NAME = "HostName"
_DEVICE_ID = "DeviceId"
_MODULE_ID = "ModuleId"
_SHARED_ACCESS_KEY = "SharedAccessKey"
_SHARED_ACCESS_KEY_NAME = "SharedAccessKeyName"
_SHARED_ACCESS_SIGNATURE = "SharedAccessSignature"
_GATEWAY_HOST_NAME = "GatewayHostName"
_X509 = "x509"

# Connection-string key -> attribute, in the order __str__ writes them.
_FIELDS = {
    _HOST_NAME: "host_name",
    _DEVICE_ID: "device_id",
    _MODULE_ID: "module_id",
    _SHARED_ACCESS_KEY_NAME: "shared_access_key_name",
    _SHARED_ACCESS_KEY: "shared_access_key",
    _SHARED_ACCESS_SIGNATURE: "shared_access_signature",
    _GATEWAY_HOST_NAME: "gateway_host_name",
}
_SECRETS = frozenset({_SHARED_ACCESS_KEY, _SHARED_ACCESS_SIGNATURE})
_REDACTED = "<redacted>"


_KEYS_BY_LOWER_CASE = {key.lower(): key for key in (*_FIELDS, _X509)}


def check_host_name(host: str, argument: str) -> None:
    """Refuse a host name that carries a port (``localhost:18883``), naming ``argument``.

    IoT Hub host names are DNS names; the official SDKs keep ``HostName=host:port`` as it is and
    then fail to resolve it when connecting, far from the mistake. A port is given on its own
    (``port=``), and a host to connect to other than the hub's name as ``GatewayHostName``
    (``gateway_hostname=``), so it is refused here, where the message can say that. An IPv6
    literal (several colons, no brackets) is a host, not a host with a port.

    Raises:
        ValueError: ``host`` ends in ``:port`` or is a bracketed ``[address]:port``.
    """
    head, colon, tail = host.rpartition(":")
    if not colon or (":" in head and not head.endswith("]")) or not tail.isdigit():
        return
    raise ValueError(
        f"{argument} must be a host name without a port, not {host!r}: give the port on its own "
        f"(port={tail}), and a host to connect to other than the hub's name as GatewayHostName "
        "in a connection string (gateway_hostname= to a constructor)"
    )


def _unknown_key_message(key: str, position: int) -> str:
    known = _KEYS_BY_LOWER_CASE.get(key.lower())
    if known is not None:
        return f"connection string has an unknown key {key!r} (key names are case-sensitive: {known})"
    # Anything else may be part of a pasted key or token, so it is not echoed.
    return f"connection string segment {position} has an unknown key"


@dataclass(frozen=True, slots=True)
class ConnectionString:
    """A parsed IoT Hub device or module connection string.

    Exactly one credential is present: a shared access key, a SAS token, or ``x509=true`` (the
    certificate itself is supplied separately).

    Example:
        >>> cs = ConnectionString.parse("HostName=h.azure-devices.net;DeviceId=d1;SharedAccessKey=a2V5")
        >>> cs.device_id
        'd1'
        >>> cs
        ConnectionString(host_name='h.azure-devices.net', device_id='d1', shared_access_key='<redacted>')
        >>> str(cs)
        'HostName=h.azure-devices.net;DeviceId=d1;SharedAccessKey=<redacted>'
        >>> cs.to_text(reveal_secrets=True)
        'HostName=h.azure-devices.net;DeviceId=d1;SharedAccessKey=a2V5'

    ``str()`` and ``repr()`` redact the key and the token, so that a connection string in a log line
    or an f-string leaks nothing; :meth:`to_text` with ``reveal_secrets=True`` gives the full text.

    Attributes:
        host_name: ``HostName``, the IoT hub's host name.
        device_id: ``DeviceId``.
        module_id: ``ModuleId`` for a module identity, else ``None``.
        shared_access_key: ``SharedAccessKey``, a base64 key.
        shared_access_key_name: ``SharedAccessKeyName``, the policy name sent as ``skn``.
        shared_access_signature: ``SharedAccessSignature``, a ready-made SAS token.
        gateway_host_name: ``GatewayHostName``, an IoT Edge gateway to connect through.
        x509: ``x509=true``: authenticate with a client certificate.

    Raises:
        ValueError: on construction, when a required field is missing or empty, a value contains
            ``;``, or the credentials do not form exactly one of key / signature / x509.
    """

    host_name: str
    device_id: str
    module_id: str | None = None
    shared_access_key: str | None = None
    shared_access_key_name: str | None = None
    shared_access_signature: str | None = None
    gateway_host_name: str | None = None
    x509: bool = False

    def __post_init__(self) -> None:
        for key, attribute in _FIELDS.items():
            value = getattr(self, attribute)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"{attribute} must be a str or None, not {type(value).__name__}")
            if not value:
                raise ValueError(f"connection string value for {key} is empty")
            if ";" in value:
                raise ValueError(f"connection string value for {key} contains ';'")
        if not isinstance(self.x509, bool):
            raise TypeError(f"x509 must be a bool, not {type(self.x509).__name__}")
        if self.host_name is None:
            raise ValueError("connection string has no HostName")
        if self.device_id is None:
            raise ValueError("connection string has no DeviceId")
        check_host_name(self.host_name, _HOST_NAME)
        if self.gateway_host_name is not None:
            check_host_name(self.gateway_host_name, _GATEWAY_HOST_NAME)
        credentials = [
            name
            for name, present in (
                (_SHARED_ACCESS_KEY, self.shared_access_key is not None),
                (_SHARED_ACCESS_SIGNATURE, self.shared_access_signature is not None),
                ("x509=true", self.x509),
            )
            if present
        ]
        if not credentials:
            raise ValueError(
                "connection string has no credential: "
                "give SharedAccessKey, SharedAccessSignature or x509=true"
            )
        if len(credentials) > 1:
            raise ValueError(f"connection string mixes credentials: {' and '.join(credentials)}")
        if self.shared_access_key_name is not None and self.shared_access_key is None:
            raise ValueError("connection string has SharedAccessKeyName without SharedAccessKey")

    @classmethod
    def parse(cls, text: str) -> ConnectionString:
        """Parse a connection string.

        Surrounding whitespace and a trailing ``;`` are tolerated. ``x509`` takes ``true`` or
        ``false`` in any letter case.

        Args:
            text: the connection string.

        Returns:
            The parsed connection string.

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: the string is empty, a segment has no ``=``, a key is unknown or repeated,
                ``HostName`` or ``DeviceId`` is missing, or the credentials are missing or mixed.
                The message never contains a key or signature.
        """
        if not isinstance(text, str):
            raise TypeError(f"connection string must be a str, not {type(text).__name__}")
        text = text.strip()
        if text.endswith(";"):
            text = text[:-1]
        if not text:
            raise ValueError("connection string is empty")
        values: dict[str, str] = {}
        for position, segment in enumerate(text.split(";"), start=1):
            key, separator, value = segment.partition("=")
            if not separator:
                # The segment could be a pasted secret, so it is not echoed.
                raise ValueError(f"connection string segment {position} is not of the form Key=Value")
            if key not in _FIELDS and key != _X509:
                raise ValueError(_unknown_key_message(key, position))
            if key in values:
                raise ValueError(f"connection string has {key} more than once")
            values[key] = value

        x509 = False
        if _X509 in values:
            flag = values.pop(_X509).lower()
            if flag not in ("true", "false"):
                raise ValueError("connection string value for x509 must be 'true' or 'false'")
            x509 = flag == "true"
        if _HOST_NAME not in values:
            raise ValueError("connection string has no HostName")
        if _DEVICE_ID not in values:
            if _SHARED_ACCESS_KEY_NAME in values:
                raise ValueError(
                    "connection string has no DeviceId: with SharedAccessKeyName it is a service (policy) "
                    "connection string, not a device's"
                )
            raise ValueError("connection string has no DeviceId")
        return cls(
            host_name=values[_HOST_NAME],
            device_id=values[_DEVICE_ID],
            module_id=values.get(_MODULE_ID),
            shared_access_key=values.get(_SHARED_ACCESS_KEY),
            shared_access_key_name=values.get(_SHARED_ACCESS_KEY_NAME),
            shared_access_signature=values.get(_SHARED_ACCESS_SIGNATURE),
            gateway_host_name=values.get(_GATEWAY_HOST_NAME),
            x509=x509,
        )

    def _segments(self, *, redact: bool) -> list[tuple[str, str]]:
        segments = []
        for key, attribute in _FIELDS.items():
            value = getattr(self, attribute)
            if value is not None:
                segments.append((key, _REDACTED if redact and key in _SECRETS else value))
        return segments

    def to_text(self, *, reveal_secrets: bool = False) -> str:
        """The connection string as text; the key and token are ``<redacted>`` unless revealed.

        Example:
            >>> ConnectionString.parse("HostName=h;DeviceId=d;SharedAccessKey=a2V5").to_text(reveal_secrets=True)
            'HostName=h;DeviceId=d;SharedAccessKey=a2V5'
        """
        text = ";".join(f"{key}={value}" for key, value in self._segments(redact=not reveal_secrets))
        return f"{text};{_X509}=true" if self.x509 else text

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        parts = [f"{_FIELDS[key]}={value!r}" for key, value in self._segments(redact=True)]
        if self.x509:
            parts.append("x509=True")
        return f"ConnectionString({', '.join(parts)})"
