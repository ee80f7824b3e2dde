"""The event loop a transport runs on: aiomqtt needs one that can watch sockets.

paho-mqtt, under aiomqtt, hands its socket to the event loop with ``add_reader``/``add_writer``.
Windows' default event loop (the proactor loop, since Python 3.8) has neither, and the failure it
produces deep inside a connect says nothing about the cause. :func:`require_selector_event_loop`
catches that case up front with the fix in the message. Only the aiomqtt transport calls it: the
native transport is designed on asyncio protocols over ``loop.create_connection``, which the
proactor loop provides.
"""

from __future__ import annotations

import asyncio
import asyncio.proactor_events

__all__ = ["require_selector_event_loop"]

_FIX = (
    "aiomqtt (transport='aiomqtt') needs a selector event loop, and this is Windows' proactor loop. "
    "Run the application on a selector loop: "
    "`with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner: runner.run(main())`, or "
    "`asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())` before `asyncio.run(main())`, "
    "or `anyio.run(main, backend_options={'loop_factory': asyncio.SelectorEventLoop})`."
)


def require_selector_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Raise at once, with the fix, when ``loop`` cannot watch sockets (Windows' proactor loop).

    Raises:
        RuntimeError: ``loop`` is a proactor event loop.
    """
    if isinstance(loop, asyncio.proactor_events.BaseProactorEventLoop):
        raise RuntimeError(_FIX)
