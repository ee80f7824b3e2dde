"""Which SAS token each connection sends, and when the session must reconnect to renew it.

Theory of operation
-------------------
Before every connection the session asks :meth:`TokenSchedule.password` for the MQTT password.
For a token credential that is the current token; once :attr:`TokenSchedule.renew_due` has passed
it is a fresh one, and the connection that carries it is the planned "renewal reconnect" (SDKs
renew 2 minutes before expiry, or a fifth of a short lifetime early).

Renewing can fail: ``renew_sas_token`` is the application's code, or a token service. While the
current token is still valid that failure costs nothing -- the current token is sent again and the
renewal retried later (:class:`~aioiothub.background_errors.RenewalFailed` says so). Only when the
token has expired does the failure fail the connection attempt, which the session retries as it
retries any refused connect.

An application that gets its tokens from elsewhere pushes them with :meth:`TokenSchedule.push`:
the pushed token is checked (shape, scope, expiry) and is what the next connection sends; the
session reconnects at once so that the old token's expiry never forces a drop.
"""

from __future__ import annotations

from collections.abc import Callable

from aioiothub.auth import Credential, SasTokenCredential, SasTokenGrant, X509Credential, parse_sas_token
from aioiothub.background_errors import RenewalFailed
from aioiothub.exceptions import ConnectError, CredentialError
from aioiothub.protocol.sas import scope_covers

__all__ = ["TokenSchedule"]


class TokenSchedule:
    """The SAS tokens of one session: what to send, when to renew, and tokens pushed by the application.

    Args:
        credential: the client's credential.
        resource_uri: the identity's SAS scope (``{hub}/devices/{id}[/modules/{id}]``).
        report: where renewal failures go.
        retry_delay: seconds before the ``n``-th retry of a failed renewal (the reconnect policy).
    """

    def __init__(
        self,
        credential: Credential,
        resource_uri: str,
        *,
        report: Callable[[RenewalFailed], None],
        retry_delay: Callable[[int], float],
    ) -> None:
        self._credential = credential
        self._resource_uri = resource_uri
        self._report = report
        self._retry_delay = retry_delay
        self._current: SasTokenGrant | None = None
        self._pushed: SasTokenGrant | None = None
        self._failures = 0
        self.renew_due = float("inf")
        """Unix time at which the next connection must carry a fresh token (``inf``: never)."""
        self.pushed_count = 0
        """How many tokens the application has pushed (a connection records the count it used)."""

    async def password(self, now: float, *, first: bool) -> str | None:
        """The MQTT password for a connection made at ``now`` (``None`` for X.509).

        Raises:
            CredentialError: the token has expired and cannot be renewed (or, on the first
                connection, renewing it failed).
            ConnectError: renewing an expired token failed; the session retries later.
        """
        credential = self._credential
        if isinstance(credential, X509Credential):
            return None
        due = now >= self.renew_due
        pushed = self._pushed
        if pushed is not None and not (due and credential.renewable):
            if pushed.expiry <= now:
                raise CredentialError(f"the SAS token pushed with update_sas_token expired at {pushed.expiry}")
            grant = pushed
        else:
            try:
                grant = await credential.get_token(self._resource_uri, now, fresh=due)
            except Exception as exc:
                if first or not credential.renewable:
                    raise
                return self._renewal_failed(exc, now)
            self._pushed = None
            self._failures = 0
        self._adopt(grant, now)
        return grant.token

    def _renewal_failed(self, error: Exception, now: float) -> str:
        self._failures += 1
        current = self._current
        if current is not None and current.expiry > now + 1:
            # Retry before the token runs out: back off, but never past half of what is left.
            retry_in = min(self._retry_delay(self._failures), max(1.0, (current.expiry - now) / 2))
            self.renew_due = now + retry_in
            self._report(RenewalFailed(error, retry_in))
            return current.token
        self._report(RenewalFailed(error, None))
        raise ConnectError(f"could not renew the expired SAS token: {error}") from error

    def _adopt(self, grant: SasTokenGrant, now: float) -> None:
        self._current = grant
        self.renew_due = float("inf")
        if not isinstance(self._credential, X509Credential) and self._credential.renewable:
            lifetime = grant.expiry - now
            # Renew ahead of expiry as the SDKs do: 2 minutes early, or a fifth of a short lifetime.
            self.renew_due = now + max(1.0, lifetime - min(120.0, lifetime / 5))

    def push(self, token: str, now: float) -> None:
        """Use ``token`` from the next connection on.

        Raises:
            RuntimeError: the client does not authenticate with a SAS token.
            TypeError: ``token`` is not a string.
            CredentialError: the token is malformed, has expired, or is scoped to another identity.
        """
        if not isinstance(self._credential, SasTokenCredential):
            raise RuntimeError(
                "update_sas_token needs a client created with a SAS token (sas_token=... or from_sas_token); "
                f"this one authenticates with {type(self._credential).__name__}"
            )
        parsed = parse_sas_token(token)
        if not scope_covers(parsed.resource_uri, self._resource_uri):
            raise CredentialError(
                f"the SAS token is scoped to {parsed.resource_uri!r}, not to this client's identity "
                f"{self._resource_uri!r}"
            )
        if parsed.expiry <= now:
            raise CredentialError(f"the SAS token expired at {parsed.expiry} (now {int(now)})")
        self._pushed = SasTokenGrant(token, parsed.expiry)
        self.pushed_count += 1
