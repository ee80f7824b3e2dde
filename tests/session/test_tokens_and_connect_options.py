"""Failed renewals, tokens pushed by the application, CleanSession and the will (fake transport)."""

from __future__ import annotations

import anyio
import pytest

from aioiothub._auth.credentials import SasTokenCredential, parse_sas_token
from aioiothub._session.background_errors import ReconnectFailed, RenewalFailed
from aioiothub.exceptions import CredentialError
from aioiothub.protocol.sas import generate_sas_token
from aioiothub.transports.base import WillMessage
from tests.fakes import FakeConnection, FakeNetwork
from tests.session.error_log import ErrorLog
from tests.session.session_helpers import KEY, make_session, running

pytestmark = pytest.mark.anyio

URI = "hub.example.net/devices/dev1"


def _token(network: FakeNetwork, lifetime: int, scope: str = URI) -> str:
    return generate_sas_token(scope, KEY, int(network.clock.time()) + lifetime)


def _password(connection: FakeConnection) -> str:
    assert connection.parameters.password is not None
    return connection.parameters.password


async def _advance_to_renewal(network: FakeNetwork, due: float) -> None:
    """Move the clock to ``due`` (elapsed seconds), where the session's watch wakes for a renewal."""
    clock = network.clock
    await network.until(lambda: any(deadline > clock.elapsed for deadline in clock.deadlines))
    clock.advance(due - 1 - clock.elapsed)  # past the liveness checks; the next wake is the renewal
    await network.until(lambda: due in clock.deadlines)
    clock.advance(1)


class Renewals:
    """A ``renew_sas_token`` callable that fails while :attr:`failing` is set."""

    def __init__(self, network: FakeNetwork) -> None:
        self.network = network
        self.failing = False
        self.issued: list[str] = []

    def __call__(self) -> str:
        if self.failing:
            raise OSError("token service unreachable")
        token = _token(self.network, 3600)
        self.issued.append(token)
        return token


async def test_a_failed_renewal_keeps_the_connection_and_is_retried_before_expiry() -> None:
    network = FakeNetwork()
    clock = network.clock
    renew = Renewals(network)
    renew.failing = True
    session = make_session(network, credential=SasTokenCredential(_token(network, 3600), renew=renew))
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        await _advance_to_renewal(network, 3480.0)
        (failed,) = await log.wait_for(RenewalFailed)
        assert isinstance(failed.error, OSError)
        assert failed.retry_in == 0.1  # the policy says at once; 0.1 s is the floor
        assert first.connected  # nothing was dropped for it
        assert len(network.connections) == 1
        renew.failing = False
        await network.until(lambda: any(abs(deadline - 3480.1) < 1e-6 for deadline in clock.deadlines))
        clock.advance(0.1)
        second = await network.connected(2)
        assert first.closed_cleanly
        assert _password(second) == renew.issued[-1]
    assert [type(event).__name__ for event in log.events] == ["RenewalFailed"]


async def test_renewing_an_expired_token_after_a_drop_is_retried_like_a_refused_connect() -> None:
    network = FakeNetwork()
    clock = network.clock
    renew = Renewals(network)
    session = make_session(network, credential=SasTokenCredential(_token(network, 600), renew=renew))
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        renew.failing = True
        network.connects_allowed = anyio.Event()  # the link is down for longer than the token lives
        first.drop()
        clock.advance(700)
        network.connects_allowed.set()
        renewal, reconnect = (await log.wait_for(RenewalFailed))[0], (await log.wait_for(ReconnectFailed))[0]
        assert renewal.retry_in is None
        assert "could not renew the expired SAS token" in str(reconnect.error)
        renew.failing = False
        second = await network.connected(len(network.connections) + 1)
        assert _password(second) == renew.issued[-1]


async def test_a_pushed_token_is_used_by_a_planned_reconnect_that_update_token_waits_for() -> None:
    network = FakeNetwork()
    clock = network.clock
    session = make_session(network, credential=SasTokenCredential(_token(network, 600)))
    async with running(session) as tasks:
        log = await ErrorLog(session, network).start(tasks)
        first = await network.connected(1)
        clock.advance(100)
        pushed = _token(network, 3600)
        await session.update_token(pushed)
        # Returned once the connection carrying the new token was up.
        assert len(network.connections) == 2
        second = network.connections[1]
        assert second.connected
        assert first.closed_cleanly
        assert _password(second) == pushed
        # Later reconnects keep using it, long past the first token's expiry.
        clock.advance(1000)
        second.drop()
        third = await network.connected(3)
        assert _password(third) == pushed
    assert [type(event).__name__ for event in log.events] == ["ConnectionDropped"]


async def test_a_token_pushed_while_disconnected_is_used_by_the_next_connection() -> None:
    network = FakeNetwork()
    session = make_session(network, credential=SasTokenCredential(_token(network, 600)))
    async with running(session) as tasks:
        first = await network.connected(1)
        network.connects_allowed = anyio.Event()
        first.drop()
        await network.until(lambda: len(network.connections) == 2)  # the attempt waits to be let through
        pushed = _token(network, 3600)
        done = anyio.Event()

        async def push() -> None:
            await session.update_token(pushed)
            done.set()

        tasks.start_soon(push)
        await anyio.wait_all_tasks_blocked()
        network.connects_allowed.set()
        # That attempt was made with the old token: a planned reconnect follows with the new one.
        third = await network.connected(3)
        with anyio.fail_after(2):
            await done.wait()
        assert _password(third) == pushed
        assert network.connections[1].closed_cleanly


async def test_with_a_renewal_callable_the_pushed_token_is_renewed_when_due() -> None:
    network = FakeNetwork()
    renew = Renewals(network)
    session = make_session(network, credential=SasTokenCredential(_token(network, 3600), renew=renew))
    async with running(session):
        await network.connected(1)
        pushed = _token(network, 600)
        await session.update_token(pushed)
        assert _password(network.connections[1]) == pushed
        assert renew.issued == []
        # Renewal is due a fifth of 600 s early.
        await _advance_to_renewal(network, 480.0)
        third = await network.connected(3)
        assert _password(third) == renew.issued[0]


@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda network: _token(network, 600, "hub.example.net/devices/dev2"), CredentialError, "scoped to"),
        (lambda network: _token(network, 600, "other.example.net/devices/dev1"), CredentialError, "scoped to"),
        (lambda network: _token(network, -5), CredentialError, "expired at"),
        (lambda network: "SharedAccessSignature sr=x", CredentialError, "malformed SAS token"),
    ],
)
async def test_a_pushed_token_is_checked_and_a_bad_one_changes_nothing(
    make: object, error: type[Exception], text: str
) -> None:
    network = FakeNetwork()
    session = make_session(network, credential=SasTokenCredential(_token(network, 600)))
    async with running(session):
        await network.connected(1)
        with pytest.raises(error, match=text):
            await session.update_token(make(network))  # type: ignore[operator]
        assert len(network.connections) == 1
        assert session.supervisor.tokens.pushed_count == 0


async def test_a_token_for_the_device_is_accepted_by_its_module_and_not_the_reverse() -> None:
    network = FakeNetwork()
    module_uri = f"{URI}/modules/mod1"
    session = make_session(network, module_id="mod1", credential=SasTokenCredential(_token(network, 600, module_uri)))
    async with running(session):
        await network.connected(1)
        await session.update_token(_token(network, 3600, URI))
        assert len(network.connections) == 2
    device_session = make_session(network, credential=SasTokenCredential(_token(network, 600)))
    async with running(device_session):
        with pytest.raises(CredentialError, match="modules/mod1"):
            await device_session.update_token(_token(network, 3600, module_uri))


async def test_only_a_client_made_with_a_sas_token_takes_pushed_tokens() -> None:
    network = FakeNetwork()
    session = make_session(network)  # a shared access key
    async with running(session):
        await network.connected(1)
        with pytest.raises(RuntimeError, match="needs a client created with a SAS token"):
            await session.update_token(_token(network, 600))


async def test_clean_session_and_the_will_go_into_every_connect() -> None:
    network = FakeNetwork()
    will = WillMessage("devices/dev1/messages/events/reason=lost", b"bye", 1, False)
    session = make_session(network, clean_session=True, will=will)
    async with running(session):
        first = await network.connected(1)
        first.drop()
        second = await network.connected(2)
    for connection in (first, second):
        assert connection.parameters.clean_session is True
        assert connection.parameters.will == will
    assert parse_sas_token(_password(second)).resource_uri == URI
