"""Counting: the latency histogram's accuracy, merging snapshots and shard summaries."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console

from aioiothub.simulator.progress import LiveProgress, format_summary
from aioiothub.simulator.stats import (
    MAX_REASONS,
    OTHER_REASONS,
    SUMMARY_MARKER,
    FleetStats,
    LatencyHistogram,
    merge_snapshots,
    merge_summaries,
    summarize,
)


def test_percentiles_are_within_the_bucket_resolution() -> None:
    generator = random.Random(5)
    samples = sorted(generator.lognormvariate(-6, 1) for _ in range(20_000))
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    for percent in (50, 90, 99):
        exact = samples[int(len(samples) * percent / 100) - 1]
        estimate = histogram.percentile(percent)
        assert estimate is not None
        assert abs(estimate - exact) / exact < 0.05


def test_an_empty_histogram_has_no_percentiles() -> None:
    assert LatencyHistogram().percentile(99) is None


def test_no_estimate_exceeds_the_largest_value_seen() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.0100, 0.0101, 0.0102):
        histogram.record(seconds)
    estimate = histogram.percentile(100)
    assert estimate is not None
    assert estimate <= 0.0102
    assert estimate == pytest.approx(0.0102, rel=0.05)


def test_merged_histograms_equal_one_histogram_of_all_samples() -> None:
    generator = random.Random(7)
    samples = [generator.uniform(0.0005, 0.2) for _ in range(3_000)]
    whole, first, second = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for index, sample in enumerate(samples):
        whole.record(sample)
        (first if index % 2 else second).record(sample)
    merged = LatencyHistogram()
    merged.add_json(first.to_json())
    merged.add_json(second.to_json())
    assert merged.buckets == whole.buckets
    assert merged.percentile(99) == whole.percentile(99)
    assert merged.count == 3_000


def test_snapshots_add_counters_and_keep_the_largest_rss() -> None:
    one, two = FleetStats(), FleetStats()
    one.add("acknowledged", 5)
    two.add("acknowledged", 7)
    two.add("failed")
    one.send_latency.record(0.001)
    two.send_latency.record(0.002)
    merged = merge_snapshots([one.snapshot(), two.snapshot()])
    assert merged["counters"]["acknowledged"] == 12
    assert merged["counters"]["failed"] == 1
    assert merged["send_latency"]["count"] == 2
    assert merged["processes"] == 2
    assert merged["peak_rss_bytes"] > 0


def test_shard_summaries_merge_into_one() -> None:
    shards = []
    for shard in range(3):
        stats = FleetStats()
        stats.add("devices", 100)
        stats.add("connected", 100)
        stats.add("acknowledged", 1_000)
        for _ in range(1_000):
            stats.send_latency.record(0.001 * (shard + 1))
        shards.append(
            summarize(stats.snapshot(), elapsed=10.0 + shard, all_connected_after=2.0 + shard, peak_connected=100,
                      stopped_by="duration")
        )
    merged = merge_summaries(shards)
    assert merged["kind"] == SUMMARY_MARKER
    assert merged["shards"] == 3
    assert merged["counters"]["devices"] == 300
    assert merged["counters"]["acknowledged"] == 3_000
    assert merged["peak_connected"] == 300
    assert merged["elapsed_s"] == 12.0
    assert merged["all_connected_after_s"] == 4.0
    assert merged["messages_per_s"] == 250.0
    assert merged["send_latency_ms"]["p50"] == pytest.approx(2.0, rel=0.05)
    assert merged["stopped_by"] == "duration"


def test_a_shard_that_never_connected_fully_leaves_the_fleet_time_unknown() -> None:
    shards = [
        summarize(FleetStats().snapshot(), elapsed=5.0, all_connected_after=1.0),
        summarize(FleetStats().snapshot(), elapsed=5.0, all_connected_after=None),
    ]
    assert merge_summaries(shards)["all_connected_after_s"] is None


def test_merging_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no simulator summaries"):
        merge_summaries([])


def test_histogram_buckets_in_the_json_are_in_numeric_order() -> None:
    histogram = LatencyHistogram()
    # 5 ms, 50 µs, 500 µs, 20 s: insertion order and string order both differ from numeric order.
    for seconds in (0.005, 0.00005, 0.0005, 20.0):
        histogram.record(seconds)
    merged = merge_snapshots([{"send_latency": histogram.to_json()}])
    for data in (histogram.to_json(), merged["send_latency"], summarize(merged, elapsed=1.0)["send_latency"]):
        indexes = [int(index) for index in data["buckets"]]
        assert indexes == sorted(indexes), data["buckets"]
        assert len(indexes) == 4


def test_failures_are_counted_per_reason_and_merge_across_processes() -> None:
    first, second = FleetStats(), FleetStats()
    first.fail("failed", TimeoutError("no PUBACK for message 7 within 30 s"))
    first.fail("failed", TimeoutError("no PUBACK for message 7 within 30 s"))
    second.fail("failed", TimeoutError("no PUBACK for message 7 within 30 s"))
    second.fail("failed", ConnectionResetError("the hub\nclosed the connection"))
    second.fail("backend_methods_failed", "status 504")
    summary = summarize(merge_snapshots([first.snapshot(), second.snapshot()]), elapsed=1.0)
    assert summary["counters"]["failed"] == 4
    assert summary["failure_reasons"] == {
        "failed": {
            "TimeoutError: no PUBACK for message 7 within 30 s": 3,
            "ConnectionResetError: the hub closed the connection": 1,
        },
        "backend_methods_failed": {"status 504": 1},
    }
    # Most frequent first, in the JSON as in the text.
    assert list(summary["failure_reasons"]["failed"].values()) == [3, 1]


def test_distinct_reasons_are_capped_with_the_rest_counted_together() -> None:
    stats = FleetStats()
    for number in range(MAX_REASONS + 5):
        stats.fail("twin_failures", ValueError(f"device sim-{number} refused"))
    reasons = stats.snapshot()["failure_reasons"]["twin_failures"]
    assert len(reasons) == MAX_REASONS + 1
    assert reasons[OTHER_REASONS] == 5
    assert sum(reasons.values()) == stats.counters["twin_failures"] == MAX_REASONS + 5


def test_the_text_summary_and_the_live_view_say_why_things_failed() -> None:
    stats = FleetStats()
    stats.add("devices", 2)
    for _ in range(3):
        stats.fail("failed", TimeoutError("no PUBACK within 30 s"))
    stats.fail("connect_failures", ConnectionRefusedError("refused with return code 3"))
    summary = summarize(stats.snapshot(), elapsed=2.0)
    text = format_summary(summary)
    assert "failed because  3x sends: TimeoutError: no PUBACK within 30 s" in text
    assert "1x connects: ConnectionRefusedError: refused with return code 3" in text

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with LiveProgress(console, title=lambda: "fleet", target=2, duration=None, backend=False) as live:
        live.update(stats.snapshot(), 1.0)
    assert "3x sends: TimeoutError: no PUBACK within 30 s" in screen.getvalue()
    assert "1x connects: ConnectionRefusedError: refused with return code 3" in screen.getvalue()
