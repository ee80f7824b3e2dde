"""Shared access policies: who may call the service REST API, and what each policy may do.

IoT Hub authenticates service calls with ``Authorization: SharedAccessSignature
sr={host}&sig=…&se=…&skn={policy}``, signed with the policy's primary or secondary key. The scope
``sr`` is the host name the caller connects to -- ``localhost``, or ``localhost:8443`` when the port
is not 443 (the SDKs put it in ``HostName``). Each policy grants some of four rights; a call needing
a right the policy lacks is refused with 401, as IoT Hub does.

The standard policies of every hub are ``iothubowner``, ``service``, ``device``, ``registryRead``
and ``registryReadWrite``. :func:`development_policies` gives them fixed, published keys -- insecure
by design, like Azurite's account key, so that scripts and samples can hard-code them --
and :func:`generated_policies` random ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from aioiothub.emulator.rest.https import HttpError, HttpRequest
from aioiothub.emulator.service_api.errors import service_error
from aioiothub.exceptions import CredentialError
from aioiothub.protocol.sas import SasToken, decode_key, parse_sas_token, string_to_sign, verify_sas_token

__all__ = [
    "RIGHTS",
    "STANDARD_POLICY_RIGHTS",
    "PolicyTokenError",
    "Right",
    "SharedAccessPolicy",
    "authorize",
    "development_policies",
    "generated_policies",
    "policy_connection_string",
    "verify_policy_token",
]

Right: TypeAlias = Literal["RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"]
RIGHTS: Final[frozenset[str]] = frozenset({"RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"})

STANDARD_POLICY_RIGHTS: Final[Mapping[str, tuple[Right, ...]]] = {
    "iothubowner": ("RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"),
    "service": ("ServiceConnect",),
    "device": ("DeviceConnect",),
    "registryRead": ("RegistryRead",),
    "registryReadWrite": ("RegistryRead", "RegistryWrite"),
}
"""The policies every IoT hub starts with, and their rights."""


@dataclass(frozen=True, slots=True)
class SharedAccessPolicy:
    """A shared access policy: a name, two keys and the rights they grant.

    Attributes:
        name: the ``SharedAccessKeyName`` (``skn`` in tokens).
        primary_key: base64 key.
        secondary_key: base64 key.
        rights: what the policy may do.
    """

    name: str
    primary_key: str
    secondary_key: str
    rights: frozenset[str]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not self.name.isascii() or ";" in self.name:
            raise ValueError(f"policy name must be non-empty ASCII without ';', got {self.name!r}")
        for argument, key in (("primary_key", self.primary_key), ("secondary_key", self.secondary_key)):
            try:
                decode_key(key)
            except CredentialError as exc:
                raise ValueError(f"policy {self.name!r} {argument}: {exc}") from None
        unknown = set(self.rights) - RIGHTS
        if unknown or not self.rights:
            raise ValueError(f"policy {self.name!r} rights must be some of {sorted(RIGHTS)}, got {sorted(self.rights)}")

    def __repr__(self) -> str:
        return f"SharedAccessPolicy(name={self.name!r}, rights={sorted(self.rights)!r})"


def _development_key(name: str, which: str) -> str:
    # Derived from fixed text, so that every copy of the emulator has the same published keys.
    return base64.b64encode(hashlib.sha256(f"aioiothub-emulator/{name}/{which}".encode()).digest()).decode("ascii")


def development_policies() -> list[SharedAccessPolicy]:
    """The standard policies with fixed, well-known development keys (insecure by design).

    Example:
        >>> owner = development_policies()[0]
        >>> owner.name, owner.primary_key
        ('iothubowner', 'JHGeeReXoKq4JyRngdrtLZZsqgC+tqicmBCtFHgGhEE=')
    """
    return [
        SharedAccessPolicy(name, _development_key(name, "primary"), _development_key(name, "secondary"), frozenset(r))
        for name, r in STANDARD_POLICY_RIGHTS.items()
    ]


def generated_policies() -> list[SharedAccessPolicy]:
    """The standard policies with random keys."""

    def key() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode("ascii")

    return [SharedAccessPolicy(name, key(), key(), frozenset(r)) for name, r in STANDARD_POLICY_RIGHTS.items()]


def policy_connection_string(host_name: str, policy: SharedAccessPolicy) -> str:
    """``HostName={host_name};SharedAccessKeyName={policy};SharedAccessKey={primary key}``."""
    # A service connection string names no device, which the device-side ConnectionString requires.
    return f"HostName={host_name};SharedAccessKeyName={policy.name};SharedAccessKey={policy.primary_key}"


class PolicyTokenError(Exception):
    """A token that is not a valid one of the hub's shared access policies (the message says why)."""


def _signed_as_service_bus(token: SasToken, key: str) -> bool:
    # Event Hubs and Service Bus sign with the key's text itself, where IoT Hub first decodes it.
    expected = hmac.new(key.encode(), string_to_sign(token.encoded_resource, token.expiry).encode(), "sha256")
    try:
        provided = base64.b64decode(token.signature.encode("ascii"), validate=True)
    except (UnicodeEncodeError, ValueError):
        return False
    return hmac.compare_digest(expected.digest(), provided)


def verify_policy_token(
    text: str, policies: Iterable[SharedAccessPolicy], *, now: float, service_bus: bool = False
) -> tuple[SharedAccessPolicy, SasToken]:
    """Check that ``text`` is a token signed by one of ``policies``, unexpired.

    The token's scope is the caller's to check (REST calls and AMQP audiences name it differently).
    With ``service_bus``, the signature is checked as Event Hubs checks it (HMAC keyed with the key's
    text): what azure-eventhub signs for the Event Hubs-compatible endpoint.

    Returns:
        The policy that signed it, and the parsed token.

    Raises:
        PolicyTokenError: the token is malformed, a device's, of an unknown policy, wrongly signed or
            expired.
    """
    try:
        token = parse_sas_token(text)
    except CredentialError as exc:
        raise PolicyTokenError(str(exc)) from None
    if token.policy_name is None:
        raise PolicyTokenError("a device or module token cannot act for the service; use a shared access policy")
    policy = next((policy for policy in policies if policy.name == token.policy_name), None)
    if policy is None:
        raise PolicyTokenError(f"no shared access policy named {token.policy_name!r}")
    if service_bus:
        if not any(_signed_as_service_bus(token, key) for key in (policy.primary_key, policy.secondary_key)):
            raise PolicyTokenError(f"token of policy {policy.name!r} refused: SAS token signature does not match")
        if token.expiry <= now:
            raise PolicyTokenError(f"token of policy {policy.name!r} refused: expired at {token.expiry}")
        return policy, token
    failures = []
    for key in (policy.primary_key, policy.secondary_key):
        try:
            verify_sas_token(token, key, resource_uri=token.resource_uri, now=now)
        except CredentialError as exc:
            failures.append(str(exc))
        else:
            return policy, token
    raise PolicyTokenError(f"token of policy {policy.name!r} refused: {failures[0]}")


def _unauthorized(message: str) -> HttpError:
    return service_error(401, "IotHubUnauthorizedAccess", message)


def authorize(
    request: HttpRequest,
    policies: Iterable[SharedAccessPolicy],
    *,
    scopes: Sequence[str],
    right: Right,
) -> SharedAccessPolicy:
    """Check that ``request`` carries a policy token valid for ``scopes`` that grants ``right``.

    Args:
        request: the service request.
        policies: the hub's policies.
        scopes: the host names a token's ``sr`` may name (compared case-insensitively).
        right: what the call needs.

    Returns:
        The policy that signed the token.

    Raises:
        HttpError: 401 without a token, with a token that is not a policy's, is malformed,
            expired or for another host, or whose policy lacks ``right``.
    """
    authorization = request.headers.get("authorization")
    if authorization is None:
        raise _unauthorized("the request has no Authorization header")
    try:
        policy, token = verify_policy_token(authorization, policies, now=time.time())
    except PolicyTokenError as exc:
        raise _unauthorized(str(exc)) from None
    scope = token.resource_uri.lower().removeprefix("https://").rstrip("/")
    if scope not in {name.lower() for name in scopes}:
        raise _unauthorized(f"token scope {token.resource_uri!r} is not this hub ({', '.join(scopes)})")
    if right not in policy.rights:
        raise _unauthorized(f"policy {policy.name!r} does not grant {right}")
    return policy
