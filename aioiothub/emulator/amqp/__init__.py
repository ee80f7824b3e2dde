"""The emulator's cloud side over AMQP 1.0: the Event Hubs-compatible endpoint back ends read from.

Modules, one job each: :mod:`.frames` (the bytes the engine does not write for us: SASL, full
performatives), :mod:`.cbs` (the ``$cbs`` tokens of a connection and what they allow),
:mod:`.messages` (hub events as AMQP messages, node replies), :mod:`.nodes` (the addresses a link
may attach to: ``$cbs``, ``$management``, the partitions), :mod:`.connection` (one connection:
SASL, then python-qpid-proton's engine on a byte stream) and :mod:`.surface` (the AMQPS and plain
AMQP listeners, composed into the running emulator).

It may import :mod:`aioiothub.emulator.hub` (the event log it serves), the listeners, the service
API's shared access policies and the shared protocol core; only :mod:`.connection`,
:mod:`.nodes` and :mod:`.messages` import the AMQP engine, which is an optional dependency
(``aioiothub[amqp]``).
"""
