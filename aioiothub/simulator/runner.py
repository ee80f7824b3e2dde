"""One simulation run: prepare the identities, run the fleet here or in worker processes, decide
when to stop, and sum everything up.

Theory of operation
-------------------
:class:`Simulation` opens its identity source (which yields the fleet's endpoint and, when it plays
the back end, its counters), then runs the devices: in this process when ``processes`` is 1, else
in a :class:`~aioiothub.simulator.workers.WorkerPool`. Meanwhile a watcher reads the merged
snapshot four times a second: it notes when every device was first connected and the peak of
connected devices, and sets the stop event when the duration is over, the fleet has been held
long enough at full size, every device has sent its messages, or no device is left (all refused or
given up). :meth:`Simulation.request_stop` (Ctrl-C)
sets the same event. Once the devices are stopped, the last snapshot becomes the summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import anyio

from aioiothub.simulator.backend import BackendTraffic
from aioiothub.simulator.endpoint import device_ids
from aioiothub.simulator.fleet import outbox_file, run_devices
from aioiothub.simulator.identities import FleetTarget, IdentitySource
from aioiothub.simulator.stats import FleetStats, merge_snapshots, summarize
from aioiothub.simulator.traffic import TrafficSettings
from aioiothub.simulator.workers import WorkerPool, split_range

__all__ = ["Simulation", "SimulationPlan"]

_WATCH_PERIOD: Final = 0.25


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate.

    Attributes:
        devices: how many devices.
        prefix: device id prefix; ids are ``prefix`` followed by the index.
        start_index: index of the first device.
        processes: processes the devices are spread over (each a contiguous index range).
        duration: seconds to run; ``None`` runs until every device has sent ``traffic.messages``
            (or until stopped, when that is ``None`` too).
        hold: stop this many seconds after every device was first connected at once (the fleet
            held at full size); ``duration``, if given too, caps the whole run.
        connect_concurrency: devices connecting at once, per process.
        traffic: what each device sends.
        backend: back-end traffic (needs an emulator the run controls).
        outbox: a directory for the devices' outboxes (one SQLite file per process, see
            :func:`~aioiothub.simulator.fleet.outbox_file`): telemetry is committed there and
            delivered in the background, so it survives the hub being away; ``None`` sends live.
    """

    devices: int = 100
    prefix: str = "sim-"
    start_index: int = 0
    processes: int = 1
    duration: float | None = None
    hold: float | None = None
    connect_concurrency: int = 100
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    backend: BackendTraffic = field(default_factory=BackendTraffic)
    outbox: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1:
            raise ValueError(f"devices must be a positive integer, not {self.devices!r}")
        if not isinstance(self.start_index, int) or self.start_index < 0:
            raise ValueError(f"start_index must be an integer from 0, not {self.start_index!r}")
        if not isinstance(self.processes, int) or not 1 <= self.processes <= self.devices:
            raise ValueError(f"processes must be from 1 to the number of devices, not {self.processes!r}")
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"duration must be a positive number of seconds, not {self.duration!r}")
        if self.hold is not None and not self.hold > 0:
            raise ValueError(f"hold must be a positive number of seconds, not {self.hold!r}")
        if not isinstance(self.connect_concurrency, int) or self.connect_concurrency < 1:
            raise ValueError(f"connect_concurrency must be a positive integer, not {self.connect_concurrency!r}")
        if not self.prefix or not isinstance(self.prefix, str):
            raise ValueError("prefix must be a non-empty string")

    def device_ids(self) -> list[str]:
        """Every device id of the run."""
        return device_ids(self.prefix, self.start_index, self.devices)

    def describe(self) -> dict[str, Any]:
        """The plan as plain JSON (for the summary)."""
        described = asdict(self)
        described["traffic"].pop("variables", None)
        return described


class Simulation:
    """One run of a :class:`SimulationPlan` against an identity source.

    Example:
        >>> async def run(plan, source):  # doctest: +SKIP
        ...     simulation = Simulation(plan, source)
        ...     summary = await simulation.run()
        ...     print(summary["counters"]["acknowledged"], summary["send_latency_ms"]["p99"])
    """

    def __init__(self, plan: SimulationPlan, source: IdentitySource, *, local_hub: bool = False) -> None:
        self.plan = plan
        self._source = source
        self._local_hub = local_hub
        self._stop = anyio.Event()
        self._stopped_by = ""
        self._started: float | None = None
        self._all_connected_after: float | None = None
        self._peak_connected = 0
        self._target: FleetTarget | None = None
        self._stats = FleetStats()
        self._pool: WorkerPool | None = None
        self._stop_snapshot: dict[str, Any] | None = None

    @property
    def description(self) -> str:
        """Where the fleet runs (known once the run started)."""
        return self._target.description if self._target is not None else "starting"

    @property
    def elapsed(self) -> float:
        """Seconds since the devices started (0 before)."""
        return 0.0 if self._started is None else time.monotonic() - self._started

    @property
    def stopping(self) -> bool:
        """Whether the run is winding down."""
        return self._stop.is_set()

    def request_stop(self, reason: str = "interrupted") -> None:
        """End the run early (the summary still comes)."""
        if not self._stop.is_set():
            self._stopped_by = reason
            self._stop_snapshot = self.snapshot()
            self._stop.set()

    def snapshot(self) -> dict[str, Any]:
        """The counters of the whole run right now (devices and back end merged)."""
        parts: list[Mapping[str, Any]] = []
        if self._pool is not None:
            parts.extend(snapshot for snapshot in self._pool.snapshots if snapshot)
        else:
            parts.append(self._stats.snapshot())
        if self._target is not None and self._target.backend_snapshot is not None:
            backend = dict(self._target.backend_snapshot())
            if backend:
                backend["processes"] = 0  # counted with the devices' processes, or not at all
                parts.append(backend)
        return merge_snapshots(parts)

    async def run(self, *, on_started: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run to the end; return the summary (see :func:`~aioiothub.simulator.stats.summarize`)."""
        plan = self.plan
        ids = plan.device_ids()
        async with self._source.open(ids, plan.backend) as target:
            self._target = target
            # The summary says where the fleet ran and which client transport (None: the client's default).
            settings = {**plan.describe(), "transport": target.endpoint.transport, "target": target.description}
            self._started = time.monotonic()
            if on_started is not None:
                on_started()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch, name="simulation watch")
                if plan.processes == 1:
                    await run_devices(
                        target.endpoint, ids, plan.traffic, self._stats, stop=self._stop,
                        connect_concurrency=plan.connect_concurrency, local_hub=self._local_hub,
                        outbox=None if plan.outbox is None else outbox_file(plan.outbox, 0),
                    )
                else:
                    shares = [ids[offset : offset + size] for offset, size in split_range(len(ids), plan.processes)]
                    self._pool = WorkerPool(
                        target.endpoint, shares, plan.traffic, connect_concurrency=plan.connect_concurrency,
                        outbox=plan.outbox,
                    )
                    async with self._pool.running():
                        await self._stop.wait()
                tasks.cancel_scope.cancel()
            final = self.snapshot()
        elapsed = self.elapsed
        # The gauges as they were when the run was told to stop, not after the devices went away.
        if self._stop_snapshot is not None:
            for gauge in ("connected", "finished"):
                final["counters"][gauge] = self._stop_snapshot["counters"][gauge]
        return summarize(
            final,
            elapsed=elapsed,
            all_connected_after=self._all_connected_after,
            peak_connected=self._peak_connected,
            stopped_by=self._stopped_by,
            settings=settings,
        )

    async def _watch(self) -> None:
        plan = self.plan
        while not self._stop.is_set():
            await anyio.sleep(_WATCH_PERIOD)
            counters = self.snapshot()["counters"]
            connected = counters["connected"]
            self._peak_connected = max(self._peak_connected, connected)
            if self._all_connected_after is None and connected >= plan.devices:
                self._all_connected_after = self.elapsed
            if counters["devices_lost"] >= plan.devices:
                self.request_stop("every device lost")
            elif self._pool is not None and any(code is not None for code in self._pool.exited):
                # A worker that exits on its own crashed: its devices are gone, stop and report.
                self.request_stop("a worker process exited")
            elif plan.duration is not None and self.elapsed >= plan.duration:
                self.request_stop("duration")
            elif (
                plan.hold is not None
                and self._all_connected_after is not None
                and self.elapsed >= self._all_connected_after + plan.hold
            ):
                self.request_stop("hold")
            elif plan.traffic.messages is not None and counters["finished"] + counters["devices_lost"] >= plan.devices:
                self.request_stop("messages")
