"""An IoT Central-style temperature controller (Plug and Play): two thermostat components.

It announces its model id, sends each thermostat's temperature as component telemetry, reports
component properties, applies and acknowledges writes of the writable ``targetTemperature``, and
answers the ``getMaxMinReport`` command of each component. The model is Microsoft's sample
``dtmi:com:example:TemperatureController;2``.

Without ``IOTHUB_DEVICE_CONNECTION_STRING`` it runs against the embedded emulator, which plays the
solution: it writes a target temperature and invokes a command, then the example ends.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime

import anyio
from _hub import device_options

import aioiothub
from aioiothub import pnp

MODEL_ID = "dtmi:com:example:TemperatureController;2"
DEVICE_ID = "thermostat-controller"


class Thermostat:
    """One component: a temperature that drifts towards its target."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.target = 21.0
        self.temperature = 18.0
        self.readings: list[float] = []
        self.since = datetime.now(UTC)

    def step(self) -> float:
        self.temperature += (self.target - self.temperature) / 4
        self.readings.append(round(self.temperature, 2))
        return self.readings[-1]

    def report(self) -> dict[str, object]:
        return {
            "maxTemp": max(self.readings),
            "minTemp": min(self.readings),
            "avgTemp": round(statistics.fmean(self.readings), 2),
            "startTime": self.since.isoformat(),
            "endTime": datetime.now(UTC).isoformat(),
        }


async def apply_writes(
    client: aioiothub.IoTHubDeviceClient, thermostats: dict[str, Thermostat], applied: anyio.Event
) -> None:
    async for request in client.writable_property_requests(components=thermostats.keys()):
        thermostat = thermostats.get(request.component or "")
        if thermostat is None or request.name != "targetTemperature":
            await request.respond(400, f"{request.name} is not writable here")
        elif not isinstance(request.value, int | float) or not 5 <= request.value <= 40:
            await request.respond(400, "out of range (5-40)", value=thermostat.target)
        else:
            thermostat.target = float(request.value)
            await request.respond(200, "applied")
            print(f"{request.component} {request.name} {thermostat.target} acknowledged (ac 200, av {request.version})")
            applied.set()


async def serve_commands(client: aioiothub.IoTHubDeviceClient, thermostats: dict[str, Thermostat]) -> None:
    # Component commands arrive as "thermostat1*getMaxMinReport", already split.
    async for request in client.method_requests():
        thermostat = thermostats.get(request.component or "")
        if thermostat is not None and request.command == "getMaxMinReport" and thermostat.readings:
            await request.respond(200, thermostat.report())
        else:
            await request.respond(404, {"error": f"unknown command {request.name}"})


async def send_readings(client: aioiothub.IoTHubDeviceClient, thermostats: dict[str, Thermostat]) -> None:
    for thermostat in thermostats.values():
        temperature = thermostat.step()
        await client.send_message(pnp.telemetry_message({"temperature": temperature}, component=thermostat.name))
        await client.update_reported_properties(
            pnp.reported_properties({"maxTempSinceLastReboot": max(thermostat.readings)}, component=thermostat.name)
        )


async def main() -> None:
    thermostats = {name: Thermostat(name) for name in ("thermostat1", "thermostat2")}
    applied = anyio.Event()
    async with (
        device_options(DEVICE_ID) as (connection_string, options, hub),
        aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, model_id=MODEL_ID, **options) as client,
        anyio.create_task_group() as tasks,
    ):
        await client.update_reported_properties(pnp.reported_properties({"serialNumber": "SN-0001"}))
        for thermostat in thermostats.values():
            # Until the solution writes a target, the device reports its own default (ac 203, av 0).
            default = pnp.WritablePropertyResponse.device_default(thermostat.target, "device default")
            await client.update_reported_properties(
                pnp.reported_properties({"targetTemperature": default}, component=thermostat.name)
            )
        tasks.start_soon(apply_writes, client, thermostats, applied)
        tasks.start_soon(serve_commands, client, thermostats)
        await send_readings(client, thermostats)
        if hub is None:
            while True:  # a real hub: report every 5 s until interrupted
                await anyio.sleep(5)
                await send_readings(client, thermostats)
        # Play the solution: write a target temperature, then ask for a report.
        await hub.wait_subscribed(DEVICE_ID, "$iothub/twin/PATCH/properties/desired/#")
        await hub.wait_subscribed(DEVICE_ID, "$iothub/methods/POST/#")
        await hub.update_desired(DEVICE_ID, {"thermostat1": {"__t": "c", "targetTemperature": 30.0}})
        with anyio.fail_after(30):
            await applied.wait()
        for _ in range(3):
            await send_readings(client, thermostats)
        result = await hub.invoke_method(DEVICE_ID, "thermostat1*getMaxMinReport", "2024-01-01T00:00:00Z", timeout=10)
        print("getMaxMinReport returned", result.status, {key: result.payload[key] for key in ("maxTemp", "minTemp")})
        print("the hub received", len(hub.telemetry(DEVICE_ID)), "component readings")
        print("reported thermostat1:", hub.twin(DEVICE_ID)["reported"]["thermostat1"])
        tasks.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
