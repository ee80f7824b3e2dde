"""Shared access signature (SAS) tokens: signing, parsing and verification.

IoT Hub and the Device Provisioning Service authenticate symmetric-key devices with a token of the form::

    SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]

where ``signature = base64(hmac_sha256(base64decode(key), f"{sr}\\n{expiry}"))``. The device side generates
tokens, the emulator verifies them; both use this module. It is sans-IO: the current time is always passed
in, never read from a clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from aioiothub.exceptions import CredentialError

__all__ = [
    "SasToken",
    "check_text",
    "decode_key",
    "derive_device_key",
    "device_resource_uri",
    "dps_resource_uri",
    "format_expiry",
    "generate_sas_token",
    "parse_sas_token",
    "scope_covers",
    "sign",
    "string_to_sign",
    "verify_sas_token",
]

_PREFIX = "SharedAccessSignature "
_KNOWN_FIELDS = frozenset({"sr", "sig", "se", "skn"})


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed SAS token.

    Attributes:
        resource_uri: the decoded scope, e.g. ``myhub.azure-devices.net/devices/dev1``.
        encoded_resource: the ``sr`` field exactly as it appeared in the token; the signature covers
            this text, not a re-encoding of ``resource_uri``.
        signature: the base64 signature (percent-decoded).
        expiry: the ``se`` field, in Unix seconds.
        policy_name: the ``skn`` field, or ``None`` when the token has none (device tokens never do).
    """

    resource_uri: str
    encoded_resource: str
    signature: str
    expiry: int
    policy_name: str | None = None

    def __repr__(self) -> str:
        return (
            f"SasToken(resource_uri={self.resource_uri!r}, encoded_resource={self.encoded_resource!r}, "
            f"signature='<redacted>', expiry={self.expiry!r}, policy_name={self.policy_name!r})"
        )


def format_expiry(expiry: int) -> str:
    """A token's ``se`` for people: ISO-8601 UTC, with the raw value in brackets (what the token says).

    Example:
        >>> format_expiry(1700000000)
        '2023-11-14T22:13:20Z (se=1700000000)'
    """
    try:
        moment = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"se={expiry}"  # beyond what datetime can show
    return f"{moment} (se={expiry})"


def decode_key(key: str) -> bytes:
    """Decode a base64 shared access key.

    Args:
        key: the key as shown in the portal or a connection string.

    Returns:
        The raw key bytes.

    Raises:
        TypeError: ``key`` is not a string.
        CredentialError: ``key`` is empty or not valid base64. The message never contains the key.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CredentialError("shared access key is not valid base64") from None
    if not raw:
        raise CredentialError("shared access key is empty")
    return raw


def _hmac_sha256(key: str, message: str) -> bytes:
    return hmac.new(decode_key(key), message.encode("utf-8"), hashlib.sha256).digest()


def sign(key: str, message: str) -> str:
    """Compute ``base64(hmac_sha256(base64decode(key), message))``.

    Example:
        >>> sign("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", "sign this message")
        '8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M='

    Args:
        key: base64 shared access key.
        message: the text to sign (encoded as UTF-8).

    Returns:
        The base64 signature.

    Raises:
        CredentialError: the key is not valid base64.
    """
    return base64.b64encode(_hmac_sha256(key, message)).decode("ascii")


def string_to_sign(encoded_resource: str, expiry: int) -> str:
    """Return the text a SAS signature covers: the encoded ``sr``, a newline, and the expiry.

    Example:
        >>> string_to_sign("myhub.azure-devices.net%2Fdevices%2Fdev1", 1578941692)
        'myhub.azure-devices.net%2Fdevices%2Fdev1\\n1578941692'
    """
    return f"{encoded_resource}\n{expiry}"


def check_text(value: object, argument: str) -> str:
    """Return ``value`` if it is a non-empty string, else raise naming ``argument``.

    Raises:
        TypeError: ``value`` is not a ``str``.
        ValueError: ``value`` is empty.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{argument} must not be empty")
    return value


def generate_sas_token(resource_uri: str, key: str, expiry: int, policy_name: str | None = None) -> str:
    """Create a SAS token for ``resource_uri`` valid until ``expiry``.

    Example:
        >>> token = generate_sas_token(
        ...     "myiothub.azure-devices.net/devices/my_device",
        ...     "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=",
        ...     1578941692,
        ... )
        >>> for field in token.split("&"):
        ...     print(field)
        SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device
        sig=dIMMdDDBGFR8eqAfYkiMxoOphaFMPtMgj7Wg%2FYB1AvU%3D
        se=1578941692

    Args:
        resource_uri: the scope, e.g. :func:`device_resource_uri` or :func:`dps_resource_uri`.
        key: base64 shared access key.
        expiry: absolute expiry in Unix seconds.
        policy_name: the ``skn`` field; DPS enrollment-group tokens use ``"registration"``, device
            tokens have none.

    Returns:
        The token text, to be sent as the MQTT password.

    Raises:
        TypeError, ValueError: an argument has the wrong type or is empty / negative.
        CredentialError: the key is not valid base64.
    """
    check_text(resource_uri, "resource_uri")
    if not resource_uri.strip("/"):
        # A scope of slashes names nothing; verify_sas_token would never accept it.
        raise ValueError(f"resource_uri must name a resource, not {resource_uri!r}")
    if not isinstance(expiry, int) or isinstance(expiry, bool):
        raise TypeError(f"expiry must be an int (Unix seconds), not {type(expiry).__name__}")
    if expiry < 0:
        raise ValueError(f"expiry must not be negative, got {expiry}")
    if policy_name is not None:
        check_text(policy_name, "policy_name")
    encoded_resource = quote(resource_uri, safe="")
    signature = sign(key, string_to_sign(encoded_resource, expiry))
    token = f"{_PREFIX}sr={encoded_resource}&sig={quote(signature, safe='')}&se={expiry}"
    if policy_name is not None:
        token += f"&skn={quote(policy_name, safe='')}"
    return token


def _unquote_field(name: str, value: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise CredentialError(f"malformed SAS token: {name} is not valid percent-encoded UTF-8") from None


def parse_sas_token(text: str) -> SasToken:
    """Parse a SAS token; the fields may come in any order.

    Example:
        >>> token = parse_sas_token("SharedAccessSignature se=1700000000&sr=hub%2Fdevices%2Fd1&sig=abcd")
        >>> token.resource_uri, token.expiry
        ('hub/devices/d1', 1700000000)

    Args:
        text: the token, starting with ``SharedAccessSignature``.

    Returns:
        The parsed token. Nothing is verified beyond its shape.

    Raises:
        TypeError: ``text`` is not a string.
        CredentialError: the token is malformed (wrong prefix, a missing, empty or duplicated field,
            a non-integer ``se``, a signature that is not base64). The message never contains the signature.
    """
    if not isinstance(text, str):
        raise TypeError(f"token must be a str, not {type(text).__name__}")
    if not text.startswith(_PREFIX):
        raise CredentialError("malformed SAS token: it does not start with 'SharedAccessSignature '")
    fields: dict[str, str] = {}
    for segment in text[len(_PREFIX) :].split("&"):
        name, separator, value = segment.partition("=")
        if not separator:
            raise CredentialError(f"malformed SAS token: segment {name[:20]!r} has no '='")
        # Fields this module does not know are not covered by the signature; they are ignored
        # rather than rejected so that tokens from newer issuers keep working.
        if name not in _KNOWN_FIELDS:
            continue
        if name in fields:
            raise CredentialError(f"malformed SAS token: field {name} appears more than once")
        if not value:
            raise CredentialError(f"malformed SAS token: field {name} is empty")
        fields[name] = value
    for required in ("sr", "sig", "se"):
        if required not in fields:
            raise CredentialError(f"malformed SAS token: field {required} is missing")

    raw_expiry = fields["se"]
    # int() would also accept " 5", "+5" and "1_0"; a token's expiry is plain decimal digits.
    if not (raw_expiry.isascii() and raw_expiry.isdigit()):
        raise CredentialError(f"malformed SAS token: se {raw_expiry[:20]!r} is not an integer")

    signature = _unquote_field("sig", fields["sig"])
    try:
        base64.b64decode(signature.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CredentialError("malformed SAS token: sig is not valid base64") from None

    policy_name = _unquote_field("skn", fields["skn"]) if "skn" in fields else None
    return SasToken(
        resource_uri=_unquote_field("sr", fields["sr"]),
        encoded_resource=fields["sr"],
        signature=signature,
        expiry=int(raw_expiry),
        policy_name=policy_name,
    )


def scope_covers(scope: str, resource_uri: str) -> bool:
    """Whether a token scoped to ``scope`` grants access to ``resource_uri``, as the hub decides.

    Example:
        >>> scope_covers("Hub/devices/d1", "hub/devices/d1/modules/m1")
        True
        >>> scope_covers("hub/devices/d1/modules/m1", "hub/devices/d1")
        False
    """
    # Host names are case-insensitive and IoT Hub compares the whole scope that way; a trailing
    # slash carries no meaning.
    scope = scope.lower().rstrip("/")
    resource = resource_uri.lower().rstrip("/")
    return bool(scope) and (resource == scope or resource.startswith(scope + "/"))


def verify_sas_token(token: str | SasToken, key: str, *, resource_uri: str, now: float) -> SasToken:
    """Check a token's signature, expiry and scope, as the hub does on CONNECT.

    Example:
        >>> key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
        >>> text = generate_sas_token("hub/devices/d1", key, 2000)
        >>> verify_sas_token(text, key, resource_uri="hub/devices/d1", now=1000).expiry
        2000

    Args:
        token: the token text or an already parsed token.
        key: the base64 key the token must be signed with.
        resource_uri: the resource being accessed. The token's scope must equal it or be a
            ``/``-separated prefix of it (compared case-insensitively): a device token covers the
            device's modules, a module token does not cover its device.
        now: the current time in Unix seconds.

    Returns:
        The parsed token.

    Raises:
        CredentialError: the token is malformed, its signature does not match, it has expired
            (``expiry <= now``) or its scope does not cover ``resource_uri``; or the key is invalid.
    """
    parsed = parse_sas_token(token) if isinstance(token, str) else token
    if not isinstance(parsed, SasToken):
        raise TypeError(f"token must be a str or SasToken, not {type(token).__name__}")
    expected = _hmac_sha256(key, string_to_sign(parsed.encoded_resource, parsed.expiry))
    try:
        provided = base64.b64decode(parsed.signature.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CredentialError("malformed SAS token: sig is not valid base64") from None
    if not hmac.compare_digest(expected, provided):
        raise CredentialError("SAS token signature does not match")
    if parsed.expiry <= now:
        raise CredentialError(f"SAS token expired at {parsed.expiry} (now {int(now)})")
    if not scope_covers(parsed.resource_uri, resource_uri):
        raise CredentialError(f"SAS token scope {parsed.resource_uri!r} does not cover {resource_uri!r}")
    return parsed


def derive_device_key(group_key: str, registration_id: str) -> str:
    """Derive a device's key from a DPS enrollment-group key.

    ``deviceKey = base64(hmac_sha256(base64decode(groupKey), registrationId))``.

    Example:
        >>> derive_device_key("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", "sign this message")
        '8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M='

    Args:
        group_key: the enrollment group's base64 key.
        registration_id: the device's registration id.

    Returns:
        The device's base64 key.

    Raises:
        CredentialError: ``group_key`` is not valid base64.
    """
    check_text(registration_id, "registration_id")
    return sign(group_key, registration_id)


def device_resource_uri(hostname: str, device_id: str, module_id: str | None = None) -> str:
    """Return the SAS scope of a device or module.

    Example:
        >>> device_resource_uri("myhub.azure-devices.net", "dev1", "mod1")
        'myhub.azure-devices.net/devices/dev1/modules/mod1'
    """
    check_text(hostname, "hostname")
    check_text(device_id, "device_id")
    if module_id is None:
        return f"{hostname}/devices/{device_id}"
    check_text(module_id, "module_id")
    return f"{hostname}/devices/{device_id}/modules/{module_id}"


def dps_resource_uri(id_scope: str, registration_id: str) -> str:
    """Return the SAS scope of a DPS registration.

    Example:
        >>> dps_resource_uri("0neFEEDC0DE", "myRegistrationId")
        '0neFEEDC0DE/registrations/myRegistrationId'
    """
    check_text(id_scope, "id_scope")
    check_text(registration_id, "registration_id")
    return f"{id_scope}/registrations/{registration_id}"
