"""ProvisioningClient against the emulator's DPS over real TLS and WebSocket sockets, every transport.

Each test checks both sides: what ``register`` returned or raised, and what the emulator recorded
(its registration records and the device it created on the hub).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.certs import certificate_thumbprints
from aioiothub.emulator.hub.dps import ProvisioningService
from aioiothub.emulator.hub.dps_enrollments import Allocation
from aioiothub.protocol.sas import derive_device_key
from tests.provisioning.provisioning_helpers import STEP, dps_options, new_id, write_pair

pytestmark = pytest.mark.anyio

MODEL_ID = "dtmi:com:example:Thermostat;1"


async def register(client: aioiothub.ProvisioningClient, payload: Any = None, **kwargs: Any) -> Any:
    async with client:
        return await client.register(payload, timeout=kwargs.pop("timeout", STEP), **kwargs)


# ------------------------------------------------------------------------------------- attestations


@pytest.mark.parametrize("websockets", [False, True], ids=["tls", "websocket"])
async def test_individual_symmetric_key(
    hub: Emulator, dps: ProvisioningService, transport: str, websockets: bool
) -> None:
    registration_id = new_id("individual")
    enrollment = dps.add_enrollment(registration_id)
    assert enrollment.primary_key is not None
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id,
        symmetric_key=enrollment.primary_key,
        **dps_options(hub, transport, websockets=websockets),
    )
    result = await register(client)
    assert result.status == "assigned"
    assert (result.device_id, result.assigned_hub, result.registration_id) == (registration_id, hub.hostname,
                                                                                registration_id)
    assert result.sub_status == "initialAssignment"
    assert result.operation_id is not None
    assert result.etag
    assert result.created
    assert result.last_updated
    (record,) = [r for r in dps.registrations() if r.registration_id == registration_id]
    assert (record.status, record.device_id, record.enrollment_group, record.attestation) == (
        "assigned", registration_id, None, "symmetric_key")
    assert record.operation_id == result.operation_id
    assert record.client_version is not None
    assert record.client_version.startswith("aioiothub/")
    device = hub.identity(registration_id)
    assert (device.authentication, device.primary_key, device.secondary_key) == (
        "sas", enrollment.primary_key, enrollment.secondary_key)


async def test_enrollment_group_key_derives_the_device_key(hub: Emulator, dps: ProvisioningService,
                                                           transport: str) -> None:
    group = dps.add_enrollment_group(new_id("group"))
    assert group.primary_key is not None
    registration_id = new_id("member")
    client = aioiothub.ProvisioningClient.from_enrollment_group_key(
        registration_id=registration_id, group_key=group.primary_key, **dps_options(hub, transport)
    )
    assert client.device_key == derive_device_key(group.primary_key, registration_id)
    result = await register(client)
    assert result.device_id == registration_id
    (record,) = [r for r in dps.registrations() if r.registration_id == registration_id]
    assert record.enrollment_group == group.name
    assert hub.identity(registration_id).primary_key == group.derive_device_key(registration_id)


async def test_secondary_group_key_works_too(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    group = dps.add_enrollment_group(new_id("group"))
    assert group.secondary_key is not None
    registration_id = new_id("member")
    client = aioiothub.ProvisioningClient.from_enrollment_group_key(
        registration_id=registration_id, group_key=group.secondary_key, **dps_options(hub, transport)
    )
    assert (await register(client)).device_id == registration_id


async def test_x509_individual_enrollment(
    hub: Emulator, dps: ProvisioningService, transport: str, tmp_path: Path
) -> None:
    registration_id = new_id("x509")
    enrollment = dps.add_enrollment(registration_id, attestation="x509")
    assert enrollment.certificate_pem is not None
    assert enrollment.private_key_pem is not None
    credential = write_pair(tmp_path, registration_id, enrollment.certificate_pem, enrollment.private_key_pem)
    client = aioiothub.ProvisioningClient.from_x509_certificate(x509=credential, **dps_options(hub, transport))
    assert client.registration_id == registration_id  # the certificate's common name
    result = await register(client)
    assert result.device_id == registration_id
    device = hub.identity(registration_id)
    assert device.authentication == "x509"
    assert device.thumbprints == set(certificate_thumbprints(enrollment.certificate_pem))


async def test_x509_enrollment_group_ca(hub: Emulator, dps: ProvisioningService, transport: str,
                                        tmp_path: Path) -> None:
    group = dps.add_enrollment_group(new_id("ca-group"), attestation="x509")
    registration_id = new_id("ca-member")
    credential = write_pair(tmp_path, registration_id, *group.issue_device_certificate(registration_id))
    client = aioiothub.ProvisioningClient.from_x509_certificate(x509=credential, **dps_options(hub, transport))
    result = await register(client)
    assert result.device_id == registration_id
    (record,) = [r for r in dps.registrations() if r.registration_id == registration_id]
    assert (record.enrollment_group, record.attestation) == (group.name, "x509")
    assert hub.identity(registration_id).thumbprints == {credential.thumbprint_sha1, credential.thumbprint_sha256}


# ------------------------------------------------------------------ payloads and custom allocation


async def test_model_id_goes_into_the_payload(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    registration_id = new_id("pnp")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, model_id=MODEL_ID, **dps_options(hub, transport)
    )
    await register(client, {"site": "plant-7"})
    (record,) = [r for r in dps.registrations() if r.registration_id == registration_id]
    assert record.request_payload == {"site": "plant-7", "modelId": MODEL_ID}


async def test_allocation_hook_picks_device_twin_and_answer(hub: Emulator, dps: ProvisioningService,
                                                            transport: str) -> None:
    seen: list[tuple[str, Any]] = []

    def allocate(registration_id: str, payload: Any) -> Allocation:
        seen.append((registration_id, payload))
        return Allocation(
            device_id=f"{registration_id}-dev",
            initial_twin={"tags": {"site": "x"}, "properties": {"desired": {"interval": 5}}},
            payload={"tier": payload["tier"]},
        )

    registration_id = new_id("custom")
    key = dps.add_enrollment(registration_id, allocation=allocate).primary_key
    assert key is not None
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    result = await register(client, {"tier": "gold"})
    assert seen == [(registration_id, {"tier": "gold"})]
    assert (result.device_id, result.payload) == (f"{registration_id}-dev", {"tier": "gold"})
    assert hub.twin(f"{registration_id}-dev")["desired"] == {"interval": 5, "$version": 2}


async def test_registering_again_keeps_the_device_and_its_twin(hub: Emulator, dps: ProvisioningService,
                                                               transport: str) -> None:
    registration_id = new_id("again")
    key = dps.add_enrollment(registration_id, initial_twin={"properties": {"desired": {"mode": "a"}}}).primary_key
    assert key is not None
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    first = await register(client)
    await hub.update_desired(registration_id, {"mode": "b"})
    second = await register(client)
    assert first.device_id == second.device_id == registration_id
    assert first.created == second.created
    assert first.operation_id != second.operation_id
    assert hub.twin(registration_id)["desired"]["mode"] == "b"


# ---------------------------------------------------------------------- polling and throttling


async def test_polls_after_each_retry_after(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    registration_id = new_id("polled")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    dps.retry_after = 1
    dps.pending_polls = 2
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    async with client:
        started = time.monotonic()
        result = await client.register(timeout=STEP * 2)
        elapsed = time.monotonic() - started
    assert result.status == "assigned"
    (record,) = [r for r in dps.registrations() if r.registration_id == registration_id]
    assert record.polls == 3
    # Three waits of retry-after=1 s: after the 202 to the register request and to two polls.
    assert elapsed >= 3.0


@pytest.mark.parametrize("status", [429, 503])
async def test_throttled_and_failing_requests_are_retried(
    hub: Emulator, dps: ProvisioningService, transport: str, status: int
) -> None:
    registration_id = new_id("throttled")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    dps.fail_requests(2, status, retry_after=0)
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    result = await register(client)
    assert result.device_id == registration_id


async def test_missing_retry_after_waits_two_seconds(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    registration_id = new_id("default-wait")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    dps.fail_requests(1, 429, retry_after=None)
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    async with client:
        started = time.monotonic()
        await client.register(timeout=STEP)
        assert time.monotonic() - started >= 2.0


async def test_throttled_past_the_deadline_is_a_timeout(hub: Emulator, dps: ProvisioningService,
                                                         transport: str) -> None:
    registration_id = new_id("deadline")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    dps.fail_requests(1000, 429, retry_after=1)
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    async with client:
        with pytest.raises(TimeoutError, match=rf"registration of '{registration_id}' did not complete within 2 s"
                           r" \(last answer 429"):
            await client.register(timeout=2)
        assert client._protocol.pending_request_id is None
    assert registration_id not in [r.registration_id for r in dps.registrations()]


# ----------------------------------------------------------------------------- refusals


async def test_failed_allocation_raises_service_error(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    def allocate(registration_id: str, payload: Any) -> Allocation:
        raise RuntimeError("no hub for this tier")

    registration_id = new_id("failing")
    key = dps.add_enrollment(registration_id, allocation=allocate).primary_key
    assert key is not None
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    with pytest.raises(aioiothub.ServiceError, match="no hub for this tier") as caught:
        await register(client)
    assert (caught.value.status, caught.value.error_code) == (400, 400209)
    assert caught.value.tracking_id
    (record,) = [r for r in dps.registrations() if r.registration_id == registration_id]
    assert (record.status, record.device_id) == ("failed", None)
    with pytest.raises(ValueError, match="not registered"):
        hub.identity(registration_id)


@pytest.mark.parametrize("kind", ["enrollment", "group"])
async def test_disabled_enrollment_raises_service_error(
    hub: Emulator, dps: ProvisioningService, transport: str, kind: str
) -> None:
    registration_id = new_id("disabled")
    if kind == "enrollment":
        key = dps.add_enrollment(registration_id, enabled=False).primary_key
    else:
        key = dps.add_enrollment_group(new_id("off"), enabled=False).derive_device_key(registration_id)
    assert key is not None
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    with pytest.raises(aioiothub.ServiceError, match="disabled") as caught:
        await register(client)
    assert (caught.value.status, caught.value.error_code) == (401, 401002)
    (record,) = [r for r in dps.registrations() if r.registration_id == registration_id]
    assert record.status == "disabled"


async def test_an_error_status_is_not_retried(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    registration_id = new_id("refused")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    dps.fail_requests(1, 401, retry_after=None)
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    with pytest.raises(aioiothub.ServiceError) as caught:
        await register(client)
    assert (caught.value.status, caught.value.error_code, caught.value.request_id) == (401, 401000, "1")


@pytest.mark.parametrize("mistake", ["wrong-key", "forged-group-key", "wrong-scope", "unknown-registration"])
async def test_bad_credentials_are_authentication_errors(
    hub: Emulator, dps: ProvisioningService, transport: str, mistake: str
) -> None:
    registration_id = new_id("bad")
    options = dps_options(hub, transport)
    group = dps.add_enrollment_group(new_id("real-group"))
    key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
    if mistake == "wrong-key":
        dps.add_enrollment(registration_id)
    elif mistake == "forged-group-key":
        key = derive_device_key(key, registration_id)  # derived from a group key DPS never issued
    elif mistake == "wrong-scope":
        assert group.primary_key is not None
        key = group.derive_device_key(registration_id)
        options["id_scope"] = "0ne99999999"
    client = aioiothub.ProvisioningClient.from_symmetric_key(registration_id=registration_id, symmetric_key=key,
                                                             **options)
    with pytest.raises(aioiothub.AuthenticationError, match="check the id scope") as caught:
        await register(client)
    assert caught.value.return_code == 5
    assert registration_id not in [r.registration_id for r in dps.registrations()]
    # Only that connection was refused: a good registration goes through right after.
    good = new_id("good")
    client = aioiothub.ProvisioningClient.from_enrollment_group_key(
        registration_id=good, group_key=group.primary_key or "", **dps_options(hub, transport)
    )
    assert (await register(client)).device_id == good


# ------------------------------------------------------------------- cancellation and misuse


async def test_cancelled_registration_leaves_nothing_pending(hub: Emulator, dps: ProvisioningService,
                                                              transport: str) -> None:
    registration_id = new_id("cancelled")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    dps.retry_after = 1
    dps.pending_polls = 100
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    async with client:
        with anyio.move_on_after(1.5) as scope:
            await client.register(timeout=STEP * 4)
        assert scope.cancelled_caught
        assert client._protocol.pending_request_id is None
        dps.pending_polls = 0
        dps.retry_after = 0
        assert (await client.register(timeout=STEP)).device_id == registration_id


async def test_register_needs_an_open_client_and_one_at_a_time(hub: Emulator, dps: ProvisioningService,
                                                                transport: str) -> None:
    registration_id = new_id("misuse")
    arrived = anyio.Event()

    def allocate(registration_id: str, payload: Any) -> Allocation:
        arrived.set()
        return Allocation()

    key = dps.add_enrollment(registration_id, allocation=allocate).primary_key
    assert key is not None
    dps.retry_after = 1
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, **dps_options(hub, transport)
    )
    with pytest.raises(RuntimeError, match="not open"):
        await client.register()
    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(client.register)
        # In progress once DPS has the request (the client then waits retry-after=1 s to poll).
        with anyio.fail_after(STEP):
            await arrived.wait()
        with pytest.raises(RuntimeError, match="already in progress"):
            await client.register()
        tasks.cancel_scope.cancel()
    with pytest.raises(RuntimeError, match="already open"):
        async with client, client:
            pass


# ----------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"id_scope": "0ne/bad"}, ValueError, "id_scope"),
        ({"registration_id": "a b"}, ValueError, "device_id|registration_id"),
        ({"gateway_hostname": "edge"}, TypeError, "gateway_hostname"),
        ({"port": 0}, ValueError, "port"),
        ({"transport": "carrier-pigeon"}, ValueError, "transport"),
        ({"model_id": "thermostat"}, ValueError, "model_id"),
        ({"x509": "cert.pem"}, ValueError, "exactly one"),
    ],
)
def test_invalid_arguments_name_the_argument(arguments: dict[str, Any], error: type[Exception], match: str) -> None:
    base: dict[str, Any] = {
        "id_scope": "0ne00000000",
        "registration_id": "dev1",
        "symmetric_key": "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=",
    }
    with pytest.raises(error, match=match):
        aioiothub.ProvisioningClient(**{**base, **arguments})


def test_x509_registration_id_must_be_the_common_name(hub: Emulator, tmp_path: Path) -> None:
    group = hub.dps.add_enrollment_group(new_id("cn-group"), attestation="x509")
    credential = write_pair(tmp_path, "cn", *group.issue_device_certificate("device-a"))
    with pytest.raises(ValueError, match="common name"):
        aioiothub.ProvisioningClient.from_x509_certificate(
            id_scope="0ne00000000", x509=credential, registration_id="device-b"
        )


def test_repr_shows_no_key() -> None:
    key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
    client = aioiothub.ProvisioningClient.from_symmetric_key(id_scope="0ne00000000", registration_id="d",
                                                             symmetric_key=key)
    assert key not in repr(client)
    assert "redacted" in repr(client)


async def test_payload_must_be_a_dict_with_a_model_id(hub: Emulator, dps: ProvisioningService, transport: str) -> None:
    registration_id = new_id("pnp-bad")
    key = dps.add_enrollment(registration_id).primary_key
    assert key is not None
    client = aioiothub.ProvisioningClient.from_symmetric_key(
        registration_id=registration_id, symmetric_key=key, model_id=MODEL_ID, **dps_options(hub, transport)
    )
    async with client:
        with pytest.raises(TypeError, match="payload"):
            await client.register([1, 2])
        with pytest.raises(ValueError, match="modelId"):
            await client.register({"modelId": "dtmi:other;1"})
        with pytest.raises(ValueError, match="timeout"):
            await client.register(timeout=0)
