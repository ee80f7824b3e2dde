"""Where the emulator keeps things: the embedded blob endpoint, upload storage, the state directory.

Modules, one job each: :mod:`.blob_sas` (blob SAS tokens, signed and checked as Azure Storage
does), :mod:`.blob_store` (the embedded blob endpoint devices upload files to),
:mod:`.upload_storage` (where an upload goes: the embedded endpoint, or Azure Storage or Azurite
through a connection string), :mod:`.state_store` (``--state-dir``: identities, twins, queued
messages and the CA, in SQLite across restarts) and :mod:`.event_store` (the built-in endpoint's
events there too, written in batches).

It may import :mod:`aioiothub.emulator.hub` (what it stores), the HTTP router of
:mod:`aioiothub.emulator.rest.https` (the blob endpoint speaks HTTP), the certificates and the
shared protocol core.
"""
