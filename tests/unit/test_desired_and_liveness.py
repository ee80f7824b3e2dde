"""The two sans-IO state machines the session relies on: desired-property sync and liveness."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.protocol.desired import DesiredState, DesiredSync, NotificationOutcome, merge_diff
from aioiothub.protocol.liveness import LivenessMonitor, Verdict
from aioiothub.protocol.twin import merge_patch

DELIVER, DROP, READ_TWIN = NotificationOutcome.DELIVER, NotificationOutcome.DROP, NotificationOutcome.READ_TWIN


def _live(desired: dict[str, Any]) -> DesiredSync:
    sync = DesiredSync()
    assert sync.want() is True
    assert sync.want() is False
    assert sync.baseline_read(desired) is False
    assert sync.state is DesiredState.LIVE
    return sync


def test_off_ignores_notifications() -> None:
    sync = DesiredSync()
    assert sync.notification({"a": 1, "$version": 2}, room=True) is DROP
    assert sync.connection_restored() is False
    assert sync.state is DesiredState.OFF


def test_baseline_delivers_notifications_then_drops_what_the_reading_covers() -> None:
    sync = DesiredSync()
    sync.want()
    assert sync.notification({"a": 1, "$version": 2}, room=True) is DELIVER
    sync.baseline_read({"a": 1, "b": 1, "$version": 3})
    assert sync.notification({"b": 1, "$version": 3}, room=True) is DROP
    assert sync.notification({"c": 1, "$version": 4}, room=True) is DELIVER
    assert sync.version == 4


def test_reconnect_resync_delivers_the_difference_once() -> None:
    sync = _live({"a": 1, "b": {"x": 1, "y": 2}, "$version": 1})
    assert sync.connection_restored() is True
    assert sync.state is DesiredState.STALE
    assert sync.notification({"a": 9, "$version": 2}, room=True) is DROP
    sync.begin_resync_read()
    result = sync.resync_read({"a": 2, "b": {"x": 1, "y": 3}, "c": [1], "$version": 3}, room=4)
    assert result.patch == {"a": 2, "b": {"y": 3}, "c": [1], "$version": 3}
    assert result.held == ()  # version 2 is covered by the reading
    assert result.read_again is False
    assert sync.state is DesiredState.LIVE
    assert sync.notification({"a": 2, "$version": 3}, room=True) is DROP


def test_a_notification_newer_than_the_reading_is_delivered_after_it() -> None:
    sync = _live({"a": 1, "$version": 1})
    assert sync.notification({"a": 2, "$version": 2}, room=False) is READ_TWIN
    sync.begin_resync_read()
    assert sync.notification({"a": 5, "$version": 5}, room=True) is DROP  # held
    assert sync.notification({"b": 4, "$version": 4}, room=True) is DROP  # held, out of order
    result = sync.resync_read({"a": 3, "$version": 3}, room=4)
    assert result.patches == [{"a": 3, "$version": 3}, {"b": 4, "$version": 4}, {"a": 5, "$version": 5}]
    assert result.read_again is False
    assert sync.state is DesiredState.LIVE
    assert sync.version == 5
    assert sync.notification({"a": 5, "$version": 5}, room=True) is DROP


def test_what_does_not_fit_is_read_again_and_never_delivered_out_of_order() -> None:
    sync = _live({"a": 1, "$version": 1})
    sync.connection_restored()
    sync.begin_resync_read()
    for version in (3, 4, 5):
        sync.notification({"a": version, "$version": version}, room=True)
    first = sync.resync_read({"a": 2, "$version": 2}, room=2)
    assert first.patches == [{"a": 2, "$version": 2}, {"a": 3, "$version": 3}]
    assert first.read_again is True
    assert sync.state is DesiredState.STALE
    sync.begin_resync_read()
    sync.notification({"a": 4, "$version": 4}, room=True)  # older than the next reading: covered
    second = sync.resync_read({"a": 5, "$version": 5}, room=2)
    assert second.patches == [{"a": 5, "$version": 5}]
    assert second.read_again is False


def test_notifications_beyond_the_hold_limit_are_recovered_by_another_reading() -> None:
    sync = DesiredSync(hold_limit=1)
    sync.want()
    sync.baseline_read({"a": 1, "$version": 1})
    sync.connection_restored()
    sync.begin_resync_read()
    sync.notification({"a": 3, "$version": 3}, room=True)
    sync.notification({"a": 4, "$version": 4}, room=True)  # not held: only its version is kept
    result = sync.resync_read({"a": 2, "$version": 2}, room=8)
    assert result.patches == [{"a": 2, "$version": 2}, {"a": 3, "$version": 3}]
    assert result.read_again is True


def test_a_reading_with_nothing_new_delivers_nothing() -> None:
    sync = _live({"a": 1, "$version": 5})
    sync.connection_restored()
    sync.begin_resync_read()
    assert sync.resync_read({"a": 1, "$version": 5}, room=1).patches == []
    assert sync.state is DesiredState.LIVE


def test_a_reconnect_during_the_baseline_reading_makes_it_stale() -> None:
    sync = DesiredSync()
    sync.want()
    assert sync.connection_restored() is False
    assert sync.baseline_read({"a": 1, "$version": 1}) is True
    assert sync.state is DesiredState.STALE


def test_merge_diff_example_and_deletions() -> None:
    assert merge_diff({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2, "d": 4}, "e": 5}) == {
        "a": None,
        "b": {"d": 4},
        "e": 5,
    }
    assert merge_diff({"a": 1}, {"a": 1.0}) == {"a": 1.0}  # 1 and 1.0 are different JSON
    assert merge_diff({"a": {"b": 1}}, {"a": 2}) == {"a": 2}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.dictionaries(st.text("abc", max_size=2), inner, max_size=3),
    max_leaves=8,
)
_documents = st.dictionaries(st.text("abcd", min_size=1, max_size=2), _json, max_size=4)


@given(_documents, _documents)
def test_merge_diff_applied_as_a_merge_patch_gives_the_new_document(old: dict[str, Any], new: dict[str, Any]) -> None:
    # Merge patches cannot express a None value that is kept, so compare without them.
    def without_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        return value

    old, new = without_none(old), without_none(new)
    assert merge_patch(old, merge_diff(old, new)) == new


def test_liveness_silence_limit() -> None:
    monitor = LivenessMonitor(keepalive=60, ack_timeout=10)
    assert monitor.check(now=89.9, last_received=0.0, oldest_unacked_since=None).verdict is Verdict.ALIVE
    dead = monitor.check(now=90.0, last_received=0.0, oldest_unacked_since=None)
    assert dead.verdict is Verdict.DEAD
    assert dead.reason == "nothing received for 90.0 s (1.5 x keep-alive)"


def test_liveness_probe_then_dead_or_cleared() -> None:
    monitor = LivenessMonitor(keepalive=60, ack_timeout=10)
    assert monitor.check(now=15.0, last_received=5.0, oldest_unacked_since=1.0).verdict is Verdict.PROBE
    assert monitor.check(now=20.0, last_received=5.0, oldest_unacked_since=1.0).verdict is Verdict.ALIVE
    assert monitor.next_check(now=20.0, last_received=5.0, oldest_unacked_since=1.0) == 25.0
    assert monitor.check(now=25.0, last_received=5.0, oldest_unacked_since=1.0).verdict is Verdict.DEAD

    answered = LivenessMonitor(keepalive=60, ack_timeout=10)
    answered.check(now=15.0, last_received=5.0, oldest_unacked_since=1.0)
    assert answered.check(now=25.0, last_received=16.0, oldest_unacked_since=1.0).verdict is Verdict.ALIVE
    assert answered.next_check(now=25.0, last_received=16.0, oldest_unacked_since=1.0) == 26.0


@pytest.mark.parametrize(
    ("now", "last_received", "oldest", "expected"),
    [
        (0.0, 0.0, None, 10.0),  # nothing in flight: at most ack_timeout away
        (85.0, 0.0, None, 90.0),  # the silence limit comes first
        (3.0, 2.0, 1.0, 12.0),  # overdue only once both the publish and the silence are old enough
        (100.0, 0.0, 1.0, 100.0),  # already due: now
    ],
)
def test_liveness_next_check(now: float, last_received: float, oldest: float | None, expected: float) -> None:
    monitor = LivenessMonitor(keepalive=60, ack_timeout=10)
    assert monitor.next_check(now=now, last_received=last_received, oldest_unacked_since=oldest) == expected


def test_a_busy_hub_with_one_late_puback_is_not_probed() -> None:
    monitor = LivenessMonitor(keepalive=60, ack_timeout=10)
    assert monitor.check(now=30.0, last_received=29.0, oldest_unacked_since=1.0).verdict is Verdict.ALIVE
