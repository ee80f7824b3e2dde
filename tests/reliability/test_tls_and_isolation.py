"""TLS is checked both ways, and one device's misbehaviour never reaches another."""

from __future__ import annotations

import contextlib
import ssl
import time
import warnings
from pathlib import Path

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.certs import CertificateAuthority
from aioiothub.protocol.mqtt import encode_connect, encode_publish
from aioiothub.protocol.sas import device_resource_uri, generate_sas_token
from aioiothub.transports import TRANSPORT_NAMES
from tests.client.client_helpers import STEP, new_id, take

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_without_the_emulator_s_ca_the_first_connect_fails_fast_naming_the_certificate(
    hub: Emulator, transport: str
) -> None:
    device = hub.add_device(new_id("untrusted"))
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        device.connection_string, port=hub.port, transport=transport
    )
    started = time.monotonic()
    with pytest.raises(aioiothub.ConnectError, match=r"(?i)certificate"):
        async with client:
            pytest.fail("connected to a hub whose certificate nobody trusts")
    assert time.monotonic() - started < STEP


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_a_certificate_for_another_host_name_is_refused(tmp_path: Path, transport: str) -> None:
    authority = CertificateAuthority.generate()
    cert_pem, key_pem = authority.issue_server_certificate(["other.example"])
    (tmp_path / "cert.pem").write_bytes(cert_pem + authority.certificate_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    async with Emulator(certfile=tmp_path / "cert.pem", keyfile=tmp_path / "key.pem", websocket_port=None) as hub:
        device = hub.add_device("dev1")
        context = ssl.create_default_context(cadata=authority.certificate_pem.decode())
        client = aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.port, ssl_context=context, transport=transport
        )
        with pytest.raises(aioiothub.ConnectError, match=r"(?i)hostname|certificate"):
            async with client:
                pytest.fail("accepted a certificate issued for other.example")


def _tls_1_1(context: ssl.SSLContext) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python's own warning about old TLS
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


async def test_the_emulator_refuses_a_client_that_speaks_less_than_tls_1_2(hub: Emulator) -> None:
    context = _tls_1_1(hub.client_ssl_context())

    async def handshake() -> None:
        stream = await anyio.connect_tcp("127.0.0.1", hub.port, tls=True, ssl_context=context, tls_hostname="localhost")
        await stream.aclose()

    with pytest.raises((ssl.SSLError, OSError, anyio.BrokenResourceError)):
        await handshake()


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_the_client_refuses_a_server_that_speaks_less_than_tls_1_2(tmp_path: Path, transport: str) -> None:
    authority = CertificateAuthority.generate()
    cert_pem, key_pem = authority.issue_server_certificate(["localhost"])
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = _tls_1_1(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    handshakes: list[str] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(Exception):
                wrapped = await anyio.streams.tls.TLSStream.wrap(stream, server_side=True, ssl_context=server_context)
                handshakes.append(wrapped.extra(anyio.streams.tls.TLSAttribute.tls_version))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, serve)
        client = aioiothub.IoTHubDeviceClient(
            hostname="localhost",
            device_id="d",
            shared_access_key="NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=",
            port=port,
            ssl_context=ssl.create_default_context(cadata=authority.certificate_pem.decode()),
            transport=transport,
        )
        with pytest.raises(aioiothub.ConnectError):
            async with client:
                pytest.fail("connected over TLS below 1.2")
        tasks.cancel_scope.cancel()
    assert handshakes == []


@pytest.mark.parametrize("transport", TRANSPORT_NAMES)
async def test_a_device_using_another_device_s_topics_is_disconnected_and_the_other_is_unaffected(
    hub: Emulator, transport: str
) -> None:
    victim = hub.add_device(new_id("victim"))
    intruder = hub.add_device(new_id("intruder"))
    client = aioiothub.IoTHubDeviceClient.from_connection_string(
        victim.connection_string, port=hub.port, ssl_context=hub.client_ssl_context(), transport=transport
    )
    async with client:
        states = client.connection_states()
        assert await anext(states) is True  # the state now; after it, only changes
        token = generate_sas_token(
            device_resource_uri(hub.hostname, intruder.device_id), intruder.primary_key or "", int(time.time()) + 60
        )
        stream = await anyio.connect_tcp(
            "127.0.0.1", hub.port, tls=True, ssl_context=hub.client_ssl_context(), tls_hostname="localhost"
        )
        async with stream:
            user = f"{hub.hostname}/{intruder.device_id}/?api-version=2021-04-12"
            await stream.send(encode_connect(intruder.device_id, user, token, 60, True))
            await stream.receive()  # CONNACK
            await stream.send(encode_publish(f"devices/{victim.device_id}/messages/events/", b"forged", 1, 1))
            closed = (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError)
            with anyio.fail_after(STEP), contextlib.suppress(*closed):
                while True:
                    await stream.receive()
        await hub.wait_disconnected(intruder.device_id, timeout=STEP)
        await client.send_message(b"still here")
        with anyio.move_on_after(0.5):
            changes = await take(states, 1, timeout=0.5)
            pytest.fail(f"the victim's connection changed: {changes}")
    assert [record.body for record in hub.telemetry(victim.device_id)] == [b"still here"]
    assert hub.telemetry(intruder.device_id) == []
