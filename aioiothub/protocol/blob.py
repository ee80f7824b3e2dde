"""Azure Blob Storage wire details a file upload needs, shared by the client and the emulator.

Block blob uploads: one ``Put Blob`` for small data, else ``Put Block`` (``?comp=block&blockid=…``)
for each chunk and ``Put Block List`` (``?comp=blocklist``) with the XML below to commit them in
order. Block ids are base64 and must all have the same length within a blob.

Example:
    >>> block_id(3)
    'MDAwMDAz'
    >>> block_list_xml(["MDAwMDAw", "MDAwMDAx"])
    b'<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>MDAwMDAw</Latest><Latest>MDAwMDAx</Latest></BlockList>'
    >>> blob_url("acct.blob.core.windows.net", "files", "dev1/a b.txt", "?sv=1&sig=x")
    'https://acct.blob.core.windows.net/files/dev1/a%20b.txt?sv=1&sig=x'
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from html import escape
from typing import Final
from urllib.parse import quote

__all__ = ["MAX_BLOCKS", "STORAGE_VERSION", "blob_url", "block_id", "block_list_xml"]

STORAGE_VERSION: Final = "2021-08-06"
"""The storage service version sent as ``x-ms-version`` and signed into SAS tokens (``sv``)."""

MAX_BLOCKS: Final = 50_000
"""Azure Storage commits at most this many blocks into one blob."""


def block_id(index: int) -> str:
    """The id of block number ``index``: base64 of its six-digit, zero-padded number."""
    if not 0 <= index < MAX_BLOCKS:
        raise ValueError(f"a blob holds at most {MAX_BLOCKS} blocks; block index {index} is out of range")
    return base64.b64encode(f"{index:06d}".encode("ascii")).decode("ascii")


def block_list_xml(block_ids: Iterable[str]) -> bytes:
    """The Put Block List body committing ``block_ids`` in order."""
    latest = "".join(f"<Latest>{escape(identifier, quote=False)}</Latest>" for identifier in block_ids)
    return f'<?xml version="1.0" encoding="utf-8"?><BlockList>{latest}</BlockList>'.encode()


def blob_url(host_name: str, container: str, blob_name: str, sas_token: str = "") -> str:
    """``https://{host_name}/{container}/{blob_name}{sas_token}``, the names percent-encoded."""
    return f"https://{host_name}/{quote(container, safe='')}/{quote(blob_name, safe='/')}{sas_token}"
