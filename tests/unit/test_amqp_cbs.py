"""``$cbs`` put-token: which tokens a connection may put, and what they then allow."""

from __future__ import annotations

import pytest

from aioiothub.emulator.amqp.cbs import Authorizations, normalize_address
from aioiothub.emulator.service_api.policies import development_policies
from aioiothub.protocol.sas import generate_sas_token
from tests.emulator.amqp_client import service_bus_token

NOW = 1_900_000_000
POLICIES = development_policies()
SERVICE = next(policy for policy in POLICIES if policy.name == "service")
READ = next(policy for policy in POLICIES if policy.name == "registryRead")


@pytest.mark.parametrize(
    ("address", "normal"),
    [
        ("sb://LocalHost/Hub/ConsumerGroups/$Default/", "hub/consumergroups/$default"),
        ("amqps://localhost:5671/hub/ConsumerGroups/$Default/Partitions/0", "hub/consumergroups/$default/partitions/0"),
        ("https://localhost", ""),
        ("hub", "hub"),
        ("localhost", ""),
        ("localhost/devices/d1", "devices/d1"),
    ],
)
def test_addresses_are_compared_without_scheme_host_or_case(address: str, normal: str) -> None:
    assert normalize_address(address, "localhost") == normal


def test_a_service_bus_token_for_the_event_hub_covers_its_partitions() -> None:
    grants = Authorizations(POLICIES, "localhost")
    audience = "sb://localhost/hub"
    answer = grants.put_token(service_bus_token(audience, "service", SERVICE.primary_key, NOW + 60), audience, now=NOW)
    assert (answer.status, answer.description) == (200, "OK")
    assert grants.allows("amqps://localhost/hub/ConsumerGroups/$Default/Partitions/3", "ServiceConnect", now=NOW)
    assert not grants.allows("amqps://localhost/other/ConsumerGroups/$Default/Partitions/3", "ServiceConnect", now=NOW)
    assert not grants.allows("hub", "RegistryRead", now=NOW)
    assert not grants.allows("hub", "ServiceConnect", now=NOW + 61)  # expired since


def test_an_iot_hub_token_for_the_hub_covers_everything_on_it() -> None:
    grants = Authorizations(POLICIES, "localhost")
    token = generate_sas_token("localhost", SERVICE.primary_key, NOW + 60, policy_name="service")
    assert grants.put_token(token, "https://localhost", now=NOW).status == 200
    assert grants.allows("/messages/devicebound", "ServiceConnect", now=NOW)


@pytest.mark.parametrize(
    ("token", "audience", "reason"),
    [
        (service_bus_token("sb://localhost/hub", "service", READ.primary_key, NOW + 60), "sb://localhost/hub",
         "signature does not match"),
        (service_bus_token("sb://localhost/hub", "service", SERVICE.primary_key, NOW - 1), "sb://localhost/hub",
         "expired"),
        (service_bus_token("sb://localhost/hub", "nobody", SERVICE.primary_key, NOW + 60), "sb://localhost/hub",
         "no shared access policy"),
        (service_bus_token("sb://localhost/other", "service", SERVICE.primary_key, NOW + 60), "sb://localhost/hub",
         "does not cover"),
        (service_bus_token("sb://elsewhere/hub", "service", SERVICE.primary_key, NOW + 60), "sb://elsewhere/hub",
         "not this hub"),
        ("not a token", "sb://localhost/hub", "malformed"),
    ],
)
def test_bad_tokens_are_refused_with_401_saying_why(token: str, audience: str, reason: str) -> None:
    answer = Authorizations(POLICIES, "localhost").put_token(token, audience, now=NOW)
    assert answer.status == 401
    assert reason in answer.description


def test_a_token_that_is_not_text_is_a_bad_request() -> None:
    assert Authorizations(POLICIES, "localhost").put_token(b"bytes", "sb://localhost/hub", now=NOW).status == 400
