"""The aiomqtt transport refuses Windows' proactor event loop up front, with the fix.

There is no Windows here: the check is exercised with an instance of asyncio's own proactor loop
class (``asyncio.proactor_events.BaseProactorEventLoop``, which Windows' ``ProactorEventLoop``
derives from), made without running its constructor, which needs a Windows proactor. What is not
verified here is the behaviour on a real Windows machine.
"""

from __future__ import annotations

import asyncio
import asyncio.proactor_events

import pytest

from aioiothub.transports.event_loop import require_selector_event_loop

pytestmark = pytest.mark.anyio


class ProactorEventLoop(asyncio.proactor_events.BaseProactorEventLoop):
    """Shaped like Windows' ``asyncio.ProactorEventLoop``."""


def test_a_proactor_loop_is_refused_with_the_fix_in_the_message() -> None:
    loop = ProactorEventLoop.__new__(ProactorEventLoop)
    # What the skipped constructor and close() would leave for __del__ to read.
    loop._closed = True  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError) as raised:
        require_selector_event_loop(loop)
    message = str(raised.value)
    assert "transport='aiomqtt'" in message
    assert "selector event loop" in message
    assert "asyncio.Runner(loop_factory=asyncio.SelectorEventLoop)" in message
    assert "WindowsSelectorEventLoopPolicy" in message


async def test_the_running_selector_loop_is_accepted() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, asyncio.SelectorEventLoop)
    require_selector_event_loop(loop)


def test_the_aiomqtt_transport_checks_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from aioiothub.transports import aiomqtt as transport

    seen: list[asyncio.AbstractEventLoop] = []
    monkeypatch.setattr(transport, "require_selector_event_loop", seen.append)

    async def build() -> None:
        from tests.unit.test_message_acknowledge import PARAMETERS

        transport.MqttConnection(PARAMETERS, lambda inbound: None)
        assert seen == [asyncio.get_running_loop()]

    asyncio.run(build())
