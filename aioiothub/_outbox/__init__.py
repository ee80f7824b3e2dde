"""The durable outbox: outgoing telemetry kept in one SQLite file until the hub acknowledges it.

:mod:`.store` is the file (schema, migrations, the statements; run only on the disk thread),
:mod:`.disk_thread` the one thread per process that runs every outbox's statements, grouping what
arrives together into one transaction (group commit), and :mod:`.outbox` the public
:class:`~aioiothub.Outbox` and the per-identity :class:`~aioiothub.OutboxQueue` the clients use.

Imports only the standard library and :mod:`aioiothub.exceptions`; the clients' delivery loop, in
:mod:`aioiothub._client`, builds on it.
"""
