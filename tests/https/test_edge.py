"""IoT Edge modules against the emulator's Edge environment: workload API, routes, module methods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.edge.edge_hub import parse_route
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION
from tests.client.client_helpers import nothing_more, reconnect_seen_by_hub
from tests.https.https_helpers import STEP, device, rest_options

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("transport")]

ROUTE = 'FROM /messages/modules/filter/outputs/out1 INTO BrokeredEndpoint("/modules/sink/inputs/in1")'


def edge_options(hub: Emulator) -> dict[str, object]:
    """Where the emulator's edgeHub listens (the Edge runtime gives no ports: 8883 and 443 are fixed)."""
    options = rest_options(hub)
    del options["ssl_context"]  # the trust bundle from the workload API is what the module trusts
    return options


async def from_edge(hub: Emulator, variables: dict[str, str], **options: object) -> aioiothub.IoTHubModuleClient:
    return await aioiothub.IoTHubModuleClient.from_edge_environment(
        environ=variables, **{**edge_options(hub), **options}
    )


@asynccontextmanager
async def answering(client: aioiothub.IoTHubDeviceClient, status: int) -> AsyncIterator[list[object]]:
    """Serve ``client``'s direct methods with ``status``, echoing the payload; yields the requests seen."""
    seen: list[object] = []

    async def serve() -> None:
        async for request in client.method_requests():
            seen.append(request.payload)
            await request.respond(status, {"echo": request.payload})

    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        yield seen
        tasks.cancel_scope.cancel()


async def test_environment_connects_through_the_workload_api(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "filter")
    assert env.variables["IOTEDGE_WORKLOADURI"] == f"unix://{env.workload_socket}"
    assert env.variables["IOTEDGE_GATEWAYHOSTNAME"] == "localhost"
    assert "SharedAccessKey" not in repr(env)

    module = await from_edge(hub, env.variables)
    async with module:
        await module.send_message({"hello": "edge"})

    (record,) = await hub.wait_for_telemetry(1, device_id="edge1", module_id="filter", timeout=STEP)
    assert record.json() == {"hello": "edge"}


async def test_routes_carry_outputs_to_inputs(hub: Emulator) -> None:
    filter_env = await hub.edge_environment("edge1", "filter", routes=[ROUTE])
    sink_env = await hub.edge_environment("edge1", "sink")
    source = await from_edge(hub, filter_env.variables)
    sink = await from_edge(hub, sink_env.variables)

    received: list[aioiothub.Message] = []

    async def receive_one() -> None:
        received.append(await anext(sink.input_messages("in1")))

    async with source, sink, anyio.create_task_group() as tasks:
        tasks.start_soon(receive_one)  # iterating subscribes
        await hub.wait_subscribed("edge1", "devices/edge1/modules/sink/inputs/#", module_id="sink", timeout=STEP)
        await source.send_message_to_output(aioiothub.Message(b"reading", properties={"unit": "C"}), "out1")
        await source.send_message_to_output(b"not routed", "out2")

    (message,) = received

    assert message.body == b"reading"
    assert message.input_name == "in1"
    assert message.properties == {"unit": "C"}
    assert len(hub.telemetry("edge1", "filter")) == 2


async def test_module_invokes_device_and_module_methods(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "caller")
    target = hub.add_device("sensor")
    module = await from_edge(hub, env.variables)

    async with answering(device(hub, target), 201) as seen:
        await hub.wait_subscribed("sensor", METHODS_SUBSCRIPTION, timeout=STEP)
        result = await module.invoke_method("sensor", "reboot", {"delay": 1})
    assert result == aioiothub.MethodResult(201, {"echo": {"delay": 1}})
    assert seen == [{"delay": 1}]

    other_env = await hub.edge_environment("edge1", "worker")
    worker = await from_edge(hub, other_env.variables)
    async with worker:

        async def answer() -> None:
            request = await anext(worker.method_requests())
            await request.respond(200, [request.name])

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(answer)
            await hub.wait_subscribed("edge1", METHODS_SUBSCRIPTION, "worker", timeout=STEP)
            result = await module.invoke_method("edge1", "status", module_id="worker")
    assert result == aioiothub.MethodResult(200, ["status"])


async def test_offline_target_is_404_and_connect_timeout_waits(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "caller")
    target = hub.add_device("sensor")
    module = await from_edge(hub, env.variables)

    with pytest.raises(aioiothub.ServiceError) as caught:
        await module.invoke_method("sensor", "reboot")
    assert caught.value.status == 404
    assert "404103" in str(caught.value)

    async def connect_later() -> None:
        # The call is already waiting at the gateway when the device comes online.
        async with answering(device(hub, target), 200):
            await hub.wait_subscribed("sensor", METHODS_SUBSCRIPTION, timeout=STEP)
            await called.wait()

    called = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(connect_later)
        result = await module.invoke_method("sensor", "reboot", {"n": 2}, connect_timeout=30)
        called.set()
    assert result.status == 200


async def test_target_that_does_not_answer_is_a_timeout(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "caller")
    target = hub.add_device("sensor")
    module = await from_edge(hub, env.variables)
    client = device(hub, target)

    taken = anyio.Event()

    async def take_and_ignore() -> None:
        await anext(client.method_requests())  # taken, never answered
        taken.set()

    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(take_and_ignore)
        await hub.wait_subscribed("sensor", METHODS_SUBSCRIPTION, timeout=STEP)
        with pytest.raises(TimeoutError, match="response_timeout=5"):
            await module.invoke_method("sensor", "slow", response_timeout=5)
        assert taken.is_set()


async def test_invoke_method_checks_arguments(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "caller")
    module = await from_edge(hub, env.variables)
    with pytest.raises(ValueError, match="response_timeout"):
        await module.invoke_method("sensor", "m", response_timeout=4)
    with pytest.raises(TypeError, match="connect_timeout"):
        await module.invoke_method("sensor", "m", connect_timeout=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="payload"):
        await module.invoke_method("sensor", "m", object())


async def test_tokens_are_renewed_through_the_workload_api(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "filter")
    module = await from_edge(hub, env.variables, sas_ttl=3)

    async with module:
        states = module.connection_states()
        assert await anext(states) is True
        # Renewal reconnects with a freshly signed token, well before the 3 s token expires.
        await reconnect_seen_by_hub(hub, "edge1", "filter", timeout=STEP)
        await module.send_message(b"after renewal")
        await nothing_more(states)  # a planned reconnect is not a drop

    (record,) = await hub.wait_for_telemetry(1, device_id="edge1", module_id="filter", timeout=STEP)
    assert record.body == b"after renewal"


async def test_local_debug_variables(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "filter")
    assert set(env.debug_variables) == {"EdgeHubConnectionString", "EdgeModuleCACertificateFile"}

    module = await from_edge(hub, env.debug_variables)
    async with module:
        await module.send_message(b"debugging")

    (record,) = await hub.wait_for_telemetry(1, device_id="edge1", module_id="filter", timeout=STEP)
    assert record.body == b"debugging"


async def test_missing_variables_are_named(hub: Emulator) -> None:
    with pytest.raises(aioiothub.CredentialError, match="IOTEDGE_IOTHUBHOSTNAME"):
        await aioiothub.IoTHubModuleClient.from_edge_environment(environ={})
    env = await hub.edge_environment("edge1", "filter")
    partial = {name: value for name, value in env.variables.items() if name != "IOTEDGE_MODULEGENERATIONID"}
    with pytest.raises(aioiothub.CredentialError, match="IOTEDGE_MODULEGENERATIONID") as caught:
        await aioiothub.IoTHubModuleClient.from_edge_environment(environ=partial)
    assert "IOTEDGE_DEVICEID" not in str(caught.value)
    with pytest.raises(TypeError, match="gateway_hostname"):
        await aioiothub.IoTHubModuleClient.from_edge_environment(environ=env.variables, gateway_hostname="x")


async def test_workload_socket_down(hub: Emulator) -> None:
    env = await hub.edge_environment("edge1", "filter")
    gone = {**env.variables, "IOTEDGE_WORKLOADURI": f"unix://{env.workload_socket}.missing"}
    with pytest.raises(aioiothub.CredentialError, match="cannot be reached"):
        await aioiothub.IoTHubModuleClient.from_edge_environment(environ=gone)


async def test_signing_refused_for_a_stale_generation(hub: Emulator) -> None:
    first = await hub.edge_environment("edge1", "filter")
    await hub.edge_environment("edge1", "filter")  # the module was redeployed: a new generation id
    with pytest.raises(aioiothub.CredentialError, match="refused signing") as caught:
        await aioiothub.IoTHubModuleClient.from_edge_environment(environ=first.variables)
    assert "404" in str(caught.value)


def test_route_syntax() -> None:
    route = parse_route(ROUTE)
    assert (route.module_id, route.output_name, route.target_module, route.target_input) == (
        "filter", "out1", "sink", "in1"
    )
    assert route.matches("filter", "out1")
    assert not route.matches("filter", "out2")
    every = parse_route('FROM /messages/modules/filter/* INTO BrokeredEndpoint("/modules/sink/inputs/all")')
    assert every.matches("filter", "anything")
    assert not every.matches("other", "anything")
    assert parse_route("FROM /messages/* INTO $upstream").target_module is None
    for bad in (
        "FROM /messages/* WHERE temperature > 30 INTO $upstream",
        "FROM /somewhere INTO $upstream",
        "FROM /messages/* INTO BrokeredEndpoint(\"/devices/x\")",
        "SELECT *",
    ):
        with pytest.raises(ValueError, match="route"):
            parse_route(bad)
