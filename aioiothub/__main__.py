"""Command line (``aioiothub`` or ``python -m aioiothub``).

- ``aioiothub demo`` runs a device against the embedded emulator and shows the traffic.
- ``aioiothub simulate --devices 1000 --duration 30`` runs a simulated fleet (see
  :mod:`aioiothub.simulator`).
- ``aioiothub merge-summaries`` merges the ``--json`` summaries of fleet shards.
- ``aioiothub --version`` prints the version.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from aioiothub._version import __version__


async def demo() -> None:
    """Start a local hub, connect one device and show every kind of traffic once."""
    # Imported here so that `--version` works without starting anything.
    from aioiothub import IoTHubDeviceClient
    from aioiothub.emulator import Emulator

    def say(who: str, text: str) -> None:
        print(f"  {who:<7} {text}", flush=True)

    print(f"aioiothub {__version__} demo: a device talking to the embedded IoT Hub emulator\n")
    async with Emulator(websocket_port=None) as hub:
        device = hub.add_device("demo-device")
        say("hub", f"listening on {hub.hostname}:{hub.port} (TLS, ephemeral CA)")
        say("hub", f"registered device {device.device_id!r}")
        async with IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
        ) as client:
            say("device", "connected over MQTT/TLS with a SAS token")

            await client.send_message({"temperature": 21.5, "humidity": 40})
            record = (await hub.wait_for_telemetry(1, device_id=device.device_id, timeout=10))[0]
            say("device", "sent telemetry {'temperature': 21.5, 'humidity': 40}")
            say("hub", f"received telemetry {record.body.decode()} ({record.system_properties.get('$.ct')})")

            await hub.update_desired(device.device_id, {"interval": 10})
            twin = await client.get_twin()
            say("device", f"read its twin: desired={twin.desired}")

            version = await client.update_reported_properties({"firmware": "1.2.0"})
            say("device", f"reported firmware 1.2.0 -> reported $version {version}")
            say("hub", f"twin now reports {hub.twin(device.device_id)['reported']}")

            async with anyio.create_task_group() as tasks:

                async def follow_desired() -> None:
                    async for patch in client.desired_property_patches():
                        say("device", f"desired patch arrived: {patch}")
                        return

                async def answer_methods() -> None:
                    async for request in client.method_requests():
                        say("device", f"method {request.name!r} called with {request.payload}")
                        await request.respond(200, {"rebooted": True})
                        return

                async def receive_cloud_messages() -> None:
                    async for message in client.cloud_messages():
                        say("device", f"cloud-to-device message {message.body!r} properties={dict(message.properties)}")
                        return

                tasks.start_soon(follow_desired)
                tasks.start_soon(answer_methods)
                tasks.start_soon(receive_cloud_messages)
                await client.wait_connected()
                # Give the iterators their subscriptions before the hub acts.
                await hub.wait_subscribed(device.device_id, "$iothub/methods/POST/#", timeout=10)
                await hub.wait_subscribed(device.device_id, "$iothub/twin/PATCH/properties/desired/#", timeout=10)
                new_version = await hub.update_desired(device.device_id, {"interval": 5})
                say("hub", f"set desired interval=5 (desired $version {new_version})")
                result = await hub.invoke_method(device.device_id, "reboot", {"delay": 1}, timeout=10)
                say("hub", f"method 'reboot' returned {result.status} {result.payload}")
                await hub.send_c2d(device.device_id, b"hello device", properties={"priority": "high"})
                say("hub", "sent a cloud-to-device message")
        say("device", "disconnected")
    print("\ndone.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m aioiothub``."""
    parser = argparse.ArgumentParser(
        prog="aioiothub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"aioiothub {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("demo", help="run a device against the embedded emulator and show the traffic")
    simulate = commands.add_parser(
        "simulate",
        help="simulate a fleet of devices (embedded emulator by default) with live progress",
        description="Simulate a fleet of devices: telemetry from a template, twin, methods and C2D, "
        "against an emulator started for the run (the default) or an existing hub.",
    )
    merge = commands.add_parser(
        "merge-summaries",
        help="merge the --json summaries of several 'aioiothub simulate' shards",
        description="Merge the summaries that 'aioiothub simulate --json' printed in several shards.",
    )
    # Imported here so that `--version` and `demo` do not load the simulator's dependencies.
    from aioiothub.simulator import cli

    cli.add_simulate_arguments(simulate)
    cli.add_merge_arguments(merge)
    arguments = parser.parse_args(argv)
    if arguments.command == "demo":
        anyio.run(demo, backend="asyncio")
        return 0
    if arguments.command == "simulate":
        return cli.simulate_main(arguments)
    if arguments.command == "merge-summaries":
        return cli.merge_main(arguments)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
