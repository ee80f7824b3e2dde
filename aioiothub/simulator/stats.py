"""What a fleet did: counters, a mergeable latency histogram, and the summary built from them.

Every process of a run (and every shard of a run spread over machines) keeps its own
:class:`FleetStats`; :meth:`FleetStats.snapshot` turns it into plain JSON, and :func:`merge_snapshots`
adds snapshots up. Latencies go into a histogram with fixed logarithmic buckets (each 1/16 of a
doubling wide, so a percentile read from it is within about 2.2 % of the true value) precisely so
that histograms from different processes add up bucket by bucket, which raw percentiles cannot.
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from aioiothub import OutboxQueue, OutboxStatistics

__all__ = [
    "COUNTERS",
    "MAX_REASONS",
    "OTHER_REASONS",
    "SUMMARY_MARKER",
    "FleetStats",
    "LatencyHistogram",
    "failure_reason",
    "merge_snapshots",
    "merge_summaries",
    "summarize",
]

SUMMARY_MARKER: Final = "aioiothub-simulator-summary"
"""The ``"kind"`` of a summary's JSON object, so that merging can pick summaries out of mixed logs."""

COUNTERS: Final = (
    "devices",            # devices this snapshot is responsible for
    "connected",          # connected right now (a gauge)
    "finished",           # devices that sent every message they were asked to (a gauge)
    "connect_failures",   # initial connection attempts that failed
    "registrations",      # devices registered through DPS (fleets provisioned with a group key)
    "devices_lost",       # devices whose client gave up reconnecting
    "reconnects",         # connections re-established after a drop
    "sent",               # telemetry messages handed to the client
    "acknowledged",       # ... and acknowledged by the hub (QoS 1) or written (QoS 0)
    "failed",             # ... that failed (timeout, connection lost, refused)
    "twin_reads",         # twin GETs answered
    "reported_updates",   # reported-property patches accepted
    "desired_patches",    # desired-property patches received
    "desired_acknowledged",  # Plug and Play writable-property acknowledgements accepted
    "methods_answered",   # direct methods answered
    "c2d_received",       # cloud-to-device messages received
    "twin_failures",      # twin or method-response operations that failed
    "backend_methods",    # direct methods invoked by the back-end traffic
    "backend_methods_ok",  # ... that returned status 200
    "backend_methods_failed",  # ... that did not (other status, timeout, device offline)
    "backend_desired_updates",  # desired-property updates written by the back-end traffic
    "backend_c2d_sent",   # cloud-to-device messages sent by the back-end traffic
    "outbox_pending",     # with --outbox: messages committed and not yet acknowledged by the hub (a gauge)
    "outbox_delivered",   # ... acknowledged by the hub during the run
    "outbox_expired",     # ... dropped undelivered at their time to live
    "outbox_dropped",     # ... dropped undelivered to make room in a full outbox
)

_OUTBOX_COUNTERS: Final = ("delivered", "expired", "dropped")

OTHER_REASONS: Final = "(other reasons)"
"""The reason under which failures are counted once a counter has :data:`MAX_REASONS` others."""

MAX_REASONS: Final = 20
# Reasons are error texts, which can name a device or a request id: without a cap a fleet whose
# every device fails differently would grow the snapshot without bound.
_MAX_REASON_LENGTH: Final = 200

# 16 buckets per doubling, from 1 µs: bucket i holds [2**(i/16), 2**((i+1)/16)) µs.
_BUCKETS_PER_DOUBLING: Final = 16
_SMALLEST: Final = 1e-6


class LatencyHistogram:
    """Counts of latencies in fixed logarithmic buckets.

    Example:
        >>> histogram = LatencyHistogram()
        >>> for milliseconds in range(1, 101):
        ...     histogram.record(milliseconds / 1000)
        >>> round(histogram.percentile(50) * 1000)
        50
    """

    __slots__ = ("buckets", "count", "maximum", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0

    def record(self, seconds: float) -> None:
        """Add one latency, in seconds."""
        index = int(math.log2(max(seconds, _SMALLEST) / _SMALLEST) * _BUCKETS_PER_DOUBLING)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds > self.maximum:
            self.maximum = seconds

    def percentile(self, percent: float) -> float | None:
        """The latency below which ``percent`` % of the recorded ones lie (``None`` if empty)."""
        if not self.count:
            return None
        rank = math.ceil(self.count * percent / 100)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= max(rank, 1):
                # The geometric middle of the bucket, capped by the largest value seen.
                middle = _SMALLEST * 2 ** ((index + 0.5) / _BUCKETS_PER_DOUBLING)
                return min(middle, self.maximum)
        return self.maximum  # pragma: no cover - the loop always reaches the rank

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: ``{"buckets": {index: count}, "count", "total", "max"}``, buckets in numeric order."""
        return {
            # Sorted as numbers: JSON keys are strings, and insertion order is the order latencies came in.
            "buckets": {str(index): self.buckets[index] for index in sorted(self.buckets)},
            "count": self.count,
            "total": self.total,
            "max": self.maximum,
        }

    def add_json(self, data: Mapping[str, Any]) -> None:
        """Add a histogram produced by :meth:`to_json` into this one."""
        for index, count in data.get("buckets", {}).items():
            self.buckets[int(index)] = self.buckets.get(int(index), 0) + int(count)
        self.count += int(data.get("count", 0))
        self.total += float(data.get("total", 0.0))
        self.maximum = max(self.maximum, float(data.get("max", 0.0)))


def failure_reason(error: BaseException | str) -> str:
    """What a failure is counted under: the error's type and text (a string is taken as it is).

    Example:
        >>> failure_reason(TimeoutError("no PUBACK within 30 s"))
        'TimeoutError: no PUBACK within 30 s'
    """
    if isinstance(error, str):
        reason = error
    else:
        text = " ".join(str(error).split())
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return reason if len(reason) <= _MAX_REASON_LENGTH else reason[: _MAX_REASON_LENGTH - 1] + "…"


def _add_reasons(into: dict[str, dict[str, int]], reasons: Mapping[str, Mapping[str, Any]]) -> None:
    for name, counts in reasons.items():
        kept = into.setdefault(name, {})
        for reason, count in counts.items():
            if reason not in kept and len(kept) >= MAX_REASONS:
                reason = OTHER_REASONS
            kept[reason] = kept.get(reason, 0) + int(count)


@dataclass
class FleetStats:
    """Live counters of one process's part of the fleet (see :data:`COUNTERS`)."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    send_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # Sends after every device of this process was connected: the fleet's steady state, without
    # the connect storm at the start (which one process cannot tell from another's).
    steady_send_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # Why things failed: counter name -> reason (see failure_reason) -> how many times.
    failure_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    _steady: bool = field(default=False, repr=False, compare=False)
    # Created only while someone waits, so that counting costs one attribute check otherwise.
    _changed: anyio.Event | None = field(default=None, repr=False, compare=False)
    # With --outbox: each open client's queue and its counts when it was opened (the run counts
    # from there); the figures of the queues of closed clients are folded into the counters.
    _outboxes: dict[OutboxQueue, OutboxStatistics] = field(default_factory=dict, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        """Increase a counter (or a gauge, with a negative ``amount`` to decrease it)."""
        self.counters[name] += amount
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def fail(self, name: str, error: BaseException | str) -> None:
        """Count one failure under the counter ``name``, and why (see :func:`failure_reason`).

        Example:
            >>> stats = FleetStats()
            >>> stats.fail("failed", TimeoutError("no PUBACK"))
            >>> stats.counters["failed"], stats.failure_reasons
            (1, {'failed': {'TimeoutError: no PUBACK': 1}})
        """
        _add_reasons(self.failure_reasons, {name: {failure_reason(error): 1}})
        self.add(name)

    def record_send(self, seconds: float) -> None:
        """Count one acknowledged message that took ``seconds`` to send."""
        self.counters["acknowledged"] += 1
        self.send_latency.record(seconds)
        if not self._steady and self.counters["connected"] >= self.counters["devices"] > 0:
            self._steady = True
        if self._steady:
            self.steady_send_latency.record(seconds)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def track_outbox(self, queue: OutboxQueue) -> None:
        """Count ``queue`` (an open client's outbox) in the ``outbox_*`` figures from now on."""
        self._outboxes[queue] = queue.statistics()

    def untrack_outbox(self, queue: OutboxQueue) -> None:
        """The client of ``queue`` closed: keep what its queue did, and what it still holds, in the counters."""
        start = self._outboxes.pop(queue, None)
        if start is None:
            return
        now = queue.statistics()
        self.counters["outbox_pending"] += now.pending
        for name in _OUTBOX_COUNTERS:
            self.counters[f"outbox_{name}"] += getattr(now, name) - getattr(start, name)

    def outbox_figures(self) -> tuple[dict[str, int], float | None]:
        """The ``outbox_*`` counters with the open queues added, and the age of the oldest pending message."""
        counters = {f"outbox_{name}": self.counters[f"outbox_{name}"] for name in ("pending", *_OUTBOX_COUNTERS)}
        oldest: float | None = None
        for queue, start in self._outboxes.items():
            now = queue.statistics()
            counters["outbox_pending"] += now.pending
            for name in _OUTBOX_COUNTERS:
                counters[f"outbox_{name}"] += getattr(now, name) - getattr(start, name)
            if now.oldest_age is not None and (oldest is None or now.oldest_age > oldest):
                oldest = now.oldest_age
        return counters, oldest

    async def wait_until(self, condition: Callable[[Mapping[str, int]], bool]) -> None:
        """Return once ``condition(counters)`` holds (checked after every change).

        Example:
            >>> async def all_connected(stats, devices):  # doctest: +SKIP
            ...     await stats.wait_until(lambda counters: counters["connected"] == devices)
        """
        while not condition(self.counters):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def snapshot(self) -> dict[str, Any]:
        """The counters, the histogram and this process's peak memory, as plain JSON."""
        outbox, oldest = self.outbox_figures()
        return {
            "counters": {**self.counters, **outbox},
            "outbox_oldest_age_s": oldest,
            "send_latency": self.send_latency.to_json(),
            "steady_send_latency": self.steady_send_latency.to_json(),
            "failure_reasons": {name: dict(counts) for name, counts in self.failure_reasons.items()},
            "processes": 1,
            "peak_rss_bytes": peak_rss_bytes(),
        }


def peak_rss_bytes() -> int:
    """This process's peak resident memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def merge_snapshots(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add snapshots (or summaries) of several processes or shards into one snapshot."""
    counters = dict.fromkeys(COUNTERS, 0)
    histogram, steady = LatencyHistogram(), LatencyHistogram()
    processes = 0
    peak_rss = 0
    oldest: float | None = None
    reasons: dict[str, dict[str, int]] = {}
    for snapshot in snapshots:
        age = snapshot.get("outbox_oldest_age_s")
        if age is not None and (oldest is None or float(age) > oldest):
            oldest = float(age)
        _add_reasons(reasons, snapshot.get("failure_reasons", {}))
        for name, value in snapshot.get("counters", {}).items():
            counters[name] = counters.get(name, 0) + int(value)
        histogram.add_json(snapshot.get("send_latency", {}))
        steady.add_json(snapshot.get("steady_send_latency", {}))
        processes += int(snapshot.get("processes", 0))
        peak_rss = max(peak_rss, int(snapshot.get("peak_rss_bytes", 0)))
    return {
        "counters": counters,
        "outbox_oldest_age_s": oldest,
        "send_latency": histogram.to_json(),
        "steady_send_latency": steady.to_json(),
        "failure_reasons": reasons,
        "processes": processes,
        "peak_rss_bytes": peak_rss,
    }


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _latency_summary(data: Mapping[str, Any]) -> dict[str, Any]:
    histogram = LatencyHistogram()
    histogram.add_json(data)
    return {
        "count": histogram.count,
        "p50": _milliseconds(histogram.percentile(50)),
        "p90": _milliseconds(histogram.percentile(90)),
        "p99": _milliseconds(histogram.percentile(99)),
        "max": _milliseconds(histogram.maximum if histogram.count else None),
        "mean": _milliseconds(histogram.total / histogram.count if histogram.count else None),
    }


def summarize(
    snapshot: Mapping[str, Any],
    *,
    elapsed: float,
    all_connected_after: float | None = None,
    peak_connected: int | None = None,
    stopped_by: str = "",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The final summary of a run (what ``--json`` prints): counters, rates and latency percentiles.

    Summaries of several shards merge with :func:`merge_summaries`, which is
    :func:`merge_snapshots` followed by this function again.
    """
    counters = dict(snapshot.get("counters", {}))
    acknowledged = counters.get("acknowledged", 0)
    return {
        "kind": SUMMARY_MARKER,
        "elapsed_s": round(elapsed, 3),
        "stopped_by": stopped_by,
        "all_connected_after_s": None if all_connected_after is None else round(all_connected_after, 3),
        "peak_connected": counters.get("connected", 0) if peak_connected is None else peak_connected,
        "messages_per_s": round(acknowledged / elapsed, 1) if elapsed > 0 else 0.0,
        "send_latency_ms": _latency_summary(snapshot.get("send_latency", {})),
        "steady_send_latency_ms": _latency_summary(snapshot.get("steady_send_latency", {})),
        "counters": counters,
        "send_latency": snapshot.get("send_latency", {}),
        "steady_send_latency": snapshot.get("steady_send_latency", {}),
        # Most frequent first, so that the JSON reads like the text summary.
        "failure_reasons": {
            name: dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
            for name, counts in snapshot.get("failure_reasons", {}).items()
        },
        "processes": snapshot.get("processes", 0),
        "peak_rss_bytes": snapshot.get("peak_rss_bytes", 0),
        "settings": dict(settings or {}),
    }


def merge_summaries(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One summary for shards that ran side by side (the longest elapsed time counts)."""
    summaries = list(summaries)
    if not summaries:
        raise ValueError("no simulator summaries to merge")
    elapsed = max(float(summary.get("elapsed_s", 0.0)) for summary in summaries)
    connected_after = [summary.get("all_connected_after_s") for summary in summaries]
    # The fleet was all connected once the slowest shard was (unknown if one never was).
    slowest = None if None in connected_after else max(float(after) for after in connected_after if after is not None)
    merged = summarize(
        merge_snapshots(summaries),
        elapsed=elapsed,
        all_connected_after=slowest,
        peak_connected=sum(int(summary.get("peak_connected", 0)) for summary in summaries),
        stopped_by=",".join(sorted({str(summary.get("stopped_by", "")) for summary in summaries})),
    )
    merged["shards"] = len(summaries)
    return merged
