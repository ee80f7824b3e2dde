"""Claims-based security: the SAS tokens an AMQP connection put on ``$cbs``, and what they allow.

Every SDK authenticates its AMQP links the same way once the connection is open: it sends a
``put-token`` request to the ``$cbs`` node -- application properties ``operation=put-token``, the
token type, ``name`` (the audience, such as ``sb://{host}/{event hub}`` or ``https://{host}``) and
the token's expiry, the token itself as the body -- and waits for a reply with ``status-code`` 200.
:class:`Authorizations` checks each token as IoT Hub does (signed with a shared access policy's key,
unexpired, its ``sr`` the audience on this hub) and remembers what it covers until it expires; a
link may then attach to any address under an audience whose policy grants the right the link needs.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from aioiothub.emulator.service_api.policies import PolicyTokenError, Right, SharedAccessPolicy, verify_policy_token

__all__ = ["Authorizations", "CbsAnswer", "normalize_address"]


@dataclass(frozen=True, slots=True)
class CbsAnswer:
    """The reply to one ``put-token``: ``status`` 200, or 401 with the reason in ``description``."""

    status: int
    description: str


def normalize_address(address: str, hostname: str) -> str:
    """``sb://Host/Hub/ConsumerGroups/$Default`` as ``hub/consumergroups/$default``: no scheme, no host,
    lower case, no slashes at the ends (an address naming only the host is ``""``)."""
    text = urllib.parse.unquote(address).strip()
    for scheme in ("sb://", "amqps://", "amqp://", "https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            host, _, path = text.partition("/")
            if host.split(":")[0].lower() not in (hostname.lower(), ""):
                return "\x00foreign"
            return path.strip("/").lower()
    # IoT Hub tokens name the hub without a scheme: ``sr=myhub.azure-devices.net``.
    host, _, path = text.partition("/")
    if host.split(":")[0].lower() == hostname.lower():
        return path.strip("/").lower()
    return text.strip("/").lower()


@dataclass(frozen=True, slots=True)
class _Grant:
    scope: str
    rights: frozenset[str]
    expiry: float


class Authorizations:
    """The tokens one connection put, checked against the hub's policies.

    Args:
        policies: the hub's shared access policies.
        hostname: the hub's host name (what audiences and token scopes must name).
    """

    __slots__ = ("_grants", "_hostname", "_policies")

    def __init__(self, policies: Sequence[SharedAccessPolicy], hostname: str) -> None:
        self._policies = policies
        self._hostname = hostname
        self._grants: list[_Grant] = []

    def put_token(self, token: object, audience: object, *, now: float | None = None) -> CbsAnswer:
        """Check a ``put-token`` request's token for ``audience`` and remember it when valid."""
        now = time.time() if now is None else now
        if not isinstance(token, str) or not isinstance(audience, str):
            return CbsAnswer(400, "put-token needs a string token and a string name (the audience)")
        scope = normalize_address(audience, self._hostname)
        if scope.startswith("\x00"):
            return CbsAnswer(401, f"the audience {audience!r} is not this hub ({self._hostname})")
        try:
            service_bus = audience.lower().startswith(("sb://", "amqps://", "amqp://"))
            policy, parsed = verify_policy_token(token, self._policies, now=now, service_bus=service_bus)
        except PolicyTokenError as exc:
            return CbsAnswer(401, str(exc))
        token_scope = normalize_address(parsed.resource_uri, self._hostname)
        if token_scope.startswith("\x00") or not _covers(token_scope, scope):
            return CbsAnswer(401, f"the token's scope {parsed.resource_uri!r} does not cover {audience!r}")
        self._grants.append(_Grant(scope, frozenset(policy.rights), float(parsed.expiry)))
        return CbsAnswer(200, "OK")

    def allows(self, address: str, right: Right, *, now: float | None = None) -> bool:
        """Whether an unexpired token granting ``right`` covers ``address``."""
        now = time.time() if now is None else now
        self._grants = [grant for grant in self._grants if grant.expiry > now]
        path = normalize_address(address, self._hostname)
        return any(right in grant.rights and _covers(grant.scope, path) for grant in self._grants)


def _covers(scope: str, path: str) -> bool:
    return scope == "" or path == scope or path.startswith(scope + "/")
