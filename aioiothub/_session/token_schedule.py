"""Which SAS token each connection sends, and when the session must reconnect to renew it.

Theory of operation
-------------------
Before every connection the session asks :meth:`TokenSchedule.password` for the MQTT password:
the current token. Once :attr:`TokenSchedule.renew_due` has passed (SDKs renew 2 minutes before
expiry, or a fifth of a short lifetime early) the session calls :meth:`TokenSchedule.renew_ahead`
while the current connection is still up; only when that produced a new token does it reconnect
-- the planned "renewal reconnect" -- and the new connection carries it.

Renewing can fail: ``renew_sas_token`` is the application's code, or a token service. While the
current token is still valid that failure costs nothing -- the connection stays up and the
renewal is retried later (:class:`~aioiothub._session.background_errors.RenewalFailed` says so). Only a
connection attempt made after the token expired (the link dropped meanwhile) fails when renewing
fails; the session retries it as it retries any refused connect.

An application that gets its tokens from elsewhere pushes them with :meth:`TokenSchedule.push`:
the pushed token is checked (shape, scope, expiry) and is what the next connection sends; the
session reconnects at once so that the old token's expiry never forces a drop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aioiothub._auth.credentials import Credential, SasTokenCredential, SasTokenGrant, X509Credential, parse_sas_token
from aioiothub._session.background_errors import RenewalFailed
from aioiothub.exceptions import ConnectError, CredentialError
from aioiothub.protocol.sas import format_expiry, scope_covers

__all__ = ["TokenSchedule"]


class TokenSchedule:
    """The SAS tokens of one session: what to send, when to renew, and tokens pushed by the application.

    Args:
        credential: the client's credential.
        resource_uri: the identity's SAS scope (``{hub}/devices/{id}[/modules/{id}]``).
        report: where renewal failures go.
        retry_delay: seconds before the ``n``-th retry of a failed renewal (the reconnect policy).
        timeout: seconds a renewal may take (``request_timeout``).
    """

    def __init__(
        self,
        credential: Credential,
        resource_uri: str,
        *,
        report: Callable[[RenewalFailed], None],
        retry_delay: Callable[[int], float],
        timeout: float,
    ) -> None:
        self._credential = credential
        self._resource_uri = resource_uri
        self._report = report
        self._retry_delay = retry_delay
        self._timeout = timeout
        self._current: SasTokenGrant | None = None
        self._next: SasTokenGrant | None = None
        self._pushed: SasTokenGrant | None = None
        self._failures = 0
        self.renew_due = float("inf")
        """Unix time from which :meth:`renew_ahead` is due (``inf``: never)."""
        self.pushed_count = 0
        """How many tokens the application has pushed (a connection records the count it used)."""

    async def password(self, now: float, *, first: bool) -> str | None:
        """The MQTT password for a connection made at ``now`` (``None`` for X.509).

        Raises:
            CredentialError: the token has expired and cannot be renewed (or, on the first
                connection, getting one failed).
            ConnectError: renewing an expired token failed; the session retries later.
        """
        credential = self._credential
        if isinstance(credential, X509Credential):
            return None
        grant, self._next = self._next, None
        if grant is not None and grant.expiry > now:
            self._adopt(grant, now)
            return grant.token
        due = now >= self.renew_due
        pushed = self._pushed
        if pushed is not None and not (due and credential.renewable):
            if pushed.expiry <= now:
                expiry = format_expiry(pushed.expiry)
                raise CredentialError(f"the SAS token given to update_sas_token expired at {expiry}")
            self._adopt(pushed, now)
            return pushed.token
        try:
            grant = await self._get_token(now, fresh=due)
        except Exception as exc:
            if first or not credential.renewable:
                raise
            current = self._current
            if current is None or current.expiry <= now + 1:
                self._report(RenewalFailed(exc, None))
                raise ConnectError(f"could not renew the expired SAS token: {exc}") from exc
            self._renewal_failed(exc, now)
            return current.token
        self._failures = 0
        self._adopt(grant, now)
        return grant.token

    async def renew_ahead(self, now: float) -> bool:
        """Get the next connection's token while the current one still works.

        Returns:
            ``True`` when a new token is ready (reconnect now); ``False`` when renewing failed --
            reported, and retried at the new :attr:`renew_due`, before the current token expires.
        """
        try:
            self._next = await self._get_token(now, fresh=True)
        except Exception as exc:
            self._renewal_failed(exc, now)
            return False
        self._failures = 0
        return True

    def _renewal_failed(self, error: Exception, now: float) -> None:
        self._failures += 1
        current = self._current
        left = current.expiry - now if current is not None else 0.0
        # Back off, but never past half of what is left of the current token.
        retry_in = max(0.1, min(self._retry_delay(self._failures), left / 2))
        self.renew_due = now + retry_in
        self._report(RenewalFailed(error, retry_in))

    async def _get_token(self, now: float, *, fresh: bool) -> SasTokenGrant:
        credential = self._credential
        assert not isinstance(credential, X509Credential)
        try:
            async with asyncio.timeout(self._timeout):
                return await credential.get_token(self._resource_uri, now, fresh=fresh)
        except TimeoutError:
            raise TimeoutError(f"getting a SAS token took longer than {self._timeout:g} s (request_timeout)") from None

    def _adopt(self, grant: SasTokenGrant, now: float) -> None:
        if grant is not self._pushed:
            self._pushed = None
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
        # The pushed token wins over one renewed ahead: the application has the last word.
        self._next = None
        if not scope_covers(parsed.resource_uri, self._resource_uri):
            raise CredentialError(
                f"the SAS token is scoped to {parsed.resource_uri!r}, not to this client's identity "
                f"{self._resource_uri!r}"
            )
        if parsed.expiry <= now:
            raise CredentialError(f"the SAS token expired at {parsed.expiry} (now {int(now)})")
        self._pushed = SasTokenGrant(token, parsed.expiry)
        self.pushed_count += 1
