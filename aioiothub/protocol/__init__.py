"""The sans-IO core of aioiothub: the IoT Hub and DPS MQTT protocol as pure functions.

Theory of operation
-------------------
Everything that is *protocol* rather than *plumbing* lives here: how client ids, usernames and topics
are spelled, how property bags are percent-encoded, how SAS tokens and connection strings look, how
twin merge patches apply and which twin and message limits hold, and what DPS registration payloads
carry. Each module turns Python values into the exact text or bytes that go on the wire and parses that
text back, raising :class:`~aioiothub.exceptions.ProtocolError` for anything a peer could have sent
wrong and :class:`ValueError` / :class:`TypeError` for caller mistakes.

The package does no I/O and reads no clock. It imports only the standard library and
:mod:`aioiothub.exceptions` -- never ``asyncio``, ``anyio``, ``ssl``, sockets or the MQTT library --
so every function can be tested with plain values and reused wherever the bytes come from. Times,
when needed, are passed in by the caller.

One codebase serves both roles. The device role (the client) builds what a device publishes and
parses what the hub sends; the hub role (the emulator) does the opposite with the same modules, so a
builder and its parser are always written and tested together. Functions used only by the hub say
so in their docstrings.

Modules, each with one job:

* :mod:`.properties` -- percent-encoding and property bags (``k1=v1&k2``).
* :mod:`.connect` -- client ids, usernames and identity validation for hub and DPS connections.
* :mod:`.topics` -- every topic and subscription filter, with a parser for each.
* :mod:`.twin` -- JSON merge patches and the twin document rules.
* :mod:`.limits` -- message size limits as the hub counts them.
* :mod:`.mqtt` -- the MQTT 3.1.1 codec (packets to bytes and back), for the client and the hub role.
* :mod:`.dps` -- Device Provisioning Service request and response bodies.
* :mod:`.json_payloads` -- JSON bodies from the network, read without letting hostile nesting crash.
* :mod:`.sas` and :mod:`.connection_string` -- shared access signatures and connection strings.
"""

from __future__ import annotations

__all__: list[str] = []
