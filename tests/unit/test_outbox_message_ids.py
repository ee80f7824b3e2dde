"""The message ids an outbox gives messages without one: random version 4 UUIDs, never repeated."""

from __future__ import annotations

import uuid

from aioiothub._client.outbox_delivery import new_message_id


def test_message_ids_are_random_version_4_uuids_in_their_canonical_text() -> None:
    ids = [new_message_id() for _ in range(5000)]  # more than one read of the random source
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    # Every variant digit occurs: the variant bits come from the random source too.
    assert {text[19] for text in ids} == set("89ab")
