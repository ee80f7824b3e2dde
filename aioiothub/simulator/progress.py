"""What the terminal shows: a live view of the run (``rich``) and the final summary as text."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from aioiothub.simulator.stats import LatencyHistogram

__all__ = ["LiveProgress", "format_summary"]

_RATE_WINDOW: Final = 5.0
_LIVE_REASONS: Final = 3
_SUMMARY_REASONS: Final = 5  # per counter

_FAILURE_LABELS: Final = {
    "failed": "sends",
    "connect_failures": "connects",
    "devices_lost": "devices lost",
    "twin_failures": "twin/methods",
    "backend_methods_failed": "back-end methods",
}
"""How each counter that has failure reasons is named where the reasons are shown."""


def _failure_reasons(reasons: Mapping[str, Mapping[str, int]], per_counter: int | None) -> list[tuple[int, str]]:
    """``(count, "label: reason")``, most frequent first; ``per_counter`` caps each counter's share."""
    rows: list[tuple[int, str]] = []
    for name, counts in reasons.items():
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        label = _FAILURE_LABELS.get(name, name)
        rows.extend((count, f"{label}: {reason}") for reason, count in ranked[:per_counter])
    return sorted(rows, key=lambda row: (-row[0], row[1]))


def _number(value: int | float) -> str:
    return f"{value:,.0f}" if isinstance(value, int) or value >= 100 else f"{value:,.1f}"


def _milliseconds(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.1f} ms"


class LiveProgress:
    """A live view of a run, redrawn from snapshots (see :meth:`update`).

    Args:
        console: where to draw (a terminal).
        title: the first line (what runs against what).
        target: how many devices the run has.
        duration: the planned duration, if any.
        backend: whether back-end traffic is played (its counters are shown then).
        outbox: whether the devices send through outboxes (their backlog is shown then).
    """

    def __init__(self, console: Console, *, title: Callable[[], str], target: int, duration: float | None,
                 backend: bool, outbox: bool = False) -> None:
        self._console = console
        self._title = title
        self._target = target
        self._duration = duration
        self._backend = backend
        self._outbox = outbox
        self._acknowledged: deque[tuple[float, int]] = deque()
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, snapshot: Mapping[str, Any], elapsed: float, *, stopping: bool = False) -> None:
        """Redraw from ``snapshot`` (a merged snapshot of the run)."""
        counters = snapshot["counters"]
        now = time.monotonic()
        self._acknowledged.append((now, counters["acknowledged"]))
        while len(self._acknowledged) > 2 and now - self._acknowledged[0][0] > _RATE_WINDOW:
            self._acknowledged.popleft()
        first_time, first_count = self._acknowledged[0]
        rate = (counters["acknowledged"] - first_count) / (now - first_time) if now > first_time else 0.0
        latency = LatencyHistogram()
        latency.add_json(snapshot["send_latency"])

        clock = f"{elapsed:,.0f} s" + (f" of {self._duration:,.0f} s" if self._duration else "")
        if stopping:
            clock += " — stopping, disconnecting the devices…"
        header = Text.assemble((self._title(), "bold"), "  ", (clock, "dim"))
        connected = counters["connected"]
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            Text("connected", style="bold"),
            ProgressBar(total=max(self._target, 1), completed=min(connected, self._target), width=40),
            Text(f"{connected:,} / {self._target:,}"),
        )
        table = Table.grid(padding=(0, 3))
        for _ in range(4):
            table.add_column(justify="right")
        table.add_row(
            "messages/s", Text(_number(rate), style="bold cyan"),
            "send latency p50", _milliseconds(latency.percentile(50)),
        )
        table.add_row(
            "acknowledged", _number(counters["acknowledged"]),
            "send latency p99", _milliseconds(latency.percentile(99)),
        )
        table.add_row(
            "failed", Text(_number(counters["failed"]), style="bold red" if counters["failed"] else ""),
            "reconnects", _number(counters["reconnects"]),
        )
        table.add_row(
            "methods answered", _number(counters["methods_answered"]),
            "desired acknowledged", _number(counters["desired_acknowledged"]),
        )
        table.add_row(
            "C2D received", _number(counters["c2d_received"]),
            "twin reads", _number(counters["twin_reads"]),
        )
        if self._backend:
            table.add_row(
                "back end: methods ok", _number(counters["backend_methods_ok"]),
                "methods failed", _number(counters["backend_methods_failed"]),
            )
        if self._outbox:
            oldest = snapshot.get("outbox_oldest_age_s")
            table.add_row(
                "outbox backlog", Text(_number(counters["outbox_pending"]),
                                       style="bold yellow" if counters["outbox_pending"] else ""),
                "oldest pending", "—" if oldest is None else f"{oldest:,.1f} s",
            )
            table.add_row(
                "outbox delivered", _number(counters["outbox_delivered"]),
                "expired / dropped", f"{counters['outbox_expired']:,} / {counters['outbox_dropped']:,}",
            )
        parts: list[Text | Table] = [header, bar, table]
        # The few most frequent reasons: a count of failures alone does not tell what to fix.
        for count, reason in _failure_reasons(snapshot.get("failure_reasons", {}), None)[:_LIVE_REASONS]:
            parts.append(Text(f"{count:,}x {reason}", style="red"))
        self._live.update(Group(*parts), refresh=True)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The final summary as a few aligned lines of text."""
    counters = summary["counters"]
    latency = summary["send_latency_ms"]

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:,.2f}"

    connected_after = summary.get("all_connected_after_s")
    in_flight = counters["sent"] - counters["acknowledged"] - counters["failed"]
    steady = summary.get("steady_send_latency_ms") or {}
    settings = summary.get("settings") or {}
    lines = [
        f"simulated {counters['devices']:,} devices for {summary['elapsed_s']:,.1f} s"
        + (f" (stopped by {summary['stopped_by']})" if summary.get("stopped_by") else ""),
        *(
            [f"  target          {settings['target']}, transport {settings.get('transport') or 'aiomqtt (default)'}"]
            if settings.get("target") else []
        ),
        f"  connected       {summary['peak_connected']:,} at peak, {counters['connected']:,} at the end"
        + (f"; all connected after {connected_after:,.1f} s" if connected_after is not None else "; never all at once"),
        f"  telemetry       {counters['acknowledged']:,} acknowledged of {counters['sent']:,} sent, "
        f"{counters['failed']:,} failed, {in_flight:,} in flight at the stop, "
        f"{summary['messages_per_s']:,.1f} messages/s",
        f"  send latency    p50 {ms(latency['p50'])} ms, p90 {ms(latency['p90'])} ms, "
        f"p99 {ms(latency['p99'])} ms, max {ms(latency['max'])} ms",
        f"  ... once up     p50 {ms(steady.get('p50'))} ms, p90 {ms(steady.get('p90'))} ms, "
        f"p99 {ms(steady.get('p99'))} ms, max {ms(steady.get('max'))} ms "
        f"({steady.get('count', 0):,} messages sent after every device of their process was connected)",
        f"  connections     {counters['reconnects']:,} reconnects, {counters['connect_failures']:,} failed connects, "
        f"{counters['devices_lost']:,} devices lost"
        + (f", {counters['registrations']:,} registered through DPS" if counters.get("registrations") else ""),
        f"  twin            {counters['twin_reads']:,} reads, {counters['desired_patches']:,} desired patches, "
        f"{counters['desired_acknowledged']:,} acknowledged, {counters['reported_updates']:,} reports, "
        f"{counters['twin_failures']:,} failed",
        f"  methods, C2D    {counters['methods_answered']:,} methods answered, "
        f"{counters['c2d_received']:,} cloud-to-device messages received",
    ]
    if counters.get("backend_methods") or counters.get("backend_desired_updates") or counters.get("backend_c2d_sent"):
        lines.append(
            f"  back end        {counters['backend_methods_ok']:,} of {counters['backend_methods']:,} method calls "
            f"returned 200 ({counters['backend_methods_failed']:,} failed), "
            f"{counters['backend_desired_updates']:,} desired writes, "
            f"{counters['backend_c2d_sent']:,} C2D messages sent"
        )
    if settings.get("outbox") or any(counters.get(f"outbox_{name}") for name in ("pending", "delivered")):
        lines.append(
            f"  outbox          {counters.get('outbox_delivered', 0):,} delivered, "
            f"{counters.get('outbox_expired', 0):,} expired, {counters.get('outbox_dropped', 0):,} dropped, "
            f"{counters.get('outbox_pending', 0):,} still pending at the end"
            + (f" (in {settings['outbox']})" if settings.get("outbox") else "")
        )
    for number, (count, reason) in enumerate(_failure_reasons(summary.get("failure_reasons", {}), _SUMMARY_REASONS)):
        lines.append(f"  {'failed because' if number == 0 else '':<15} {count:,}x {reason}")
    lines.append(
        f"  processes       {summary['processes']}, peak RSS {summary['peak_rss_bytes'] / 2**20:,.0f} MiB (largest)"
    )
    return "\n".join(lines)
