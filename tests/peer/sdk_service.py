"""Microsoft's Python service SDK (``azure-iot-hub``) against the emulator, as a user's script would run it.

Runs under the service peer venv's interpreter, never under pytest, so it imports nothing from
aioiothub. Arguments: the service connection string, the id of a connected device and of one of
its modules. Each step prints one JSON line ``{"step": …, …}`` with what the SDK returned; the test
checks it against what the emulator and the aioiothub clients saw. The CA comes through
``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError


def report(step: str, **values: Any) -> None:
    print(json.dumps({"step": step, **values}, default=str), flush=True)


def main() -> None:
    connection_string, device_id, module_id = sys.argv[1:4]
    registry = IoTHubRegistryManager.from_connection_string(connection_string)

    created = registry.create_device_with_sas("sdk-created", "", "", "enabled")
    report("created", device_id=created.device_id, status=created.status, etag=created.etag,
           primary_key=created.authentication.symmetric_key.primary_key)
    fetched = registry.get_device("sdk-created")
    report("fetched", device_id=fetched.device_id, etag=fetched.etag, connection_state=fetched.connection_state)
    disabled = registry.update_device_with_sas(
        "sdk-created", fetched.etag, fetched.authentication.symmetric_key.primary_key,
        fetched.authentication.symmetric_key.secondary_key, "disabled",
    )
    report("disabled", status=disabled.status, etag=disabled.etag)

    twin = registry.get_twin(device_id)
    report("twin", etag=twin.etag, reported=twin.properties.reported, tags=twin.tags)
    patch = Twin(tags={"site": "b1"}, properties=TwinProperties(desired={"interval": 7}))
    updated = registry.update_twin(device_id, patch, twin.etag)
    report("twin updated", tags=updated.tags, desired=updated.properties.desired, etag=updated.etag)
    try:
        registry.update_twin(device_id, Twin(tags={"site": "b2"}), twin.etag)
    except HttpOperationError as exc:
        report("stale etag", status=exc.response.status_code)

    result = registry.invoke_device_method(
        device_id, CloudToDeviceMethod(method_name="echo", payload={"n": 1}, response_timeout_in_seconds=10)
    )
    report("device method", status=result.status, payload=result.payload)
    request = CloudToDeviceMethod(method_name="echo", payload="to module", response_timeout_in_seconds=10)
    result = registry.invoke_device_module_method(device_id, module_id, request)
    report("module method", status=result.status, payload=result.payload)

    query = registry.query_iot_hub({"query": "SELECT * FROM devices WHERE tags.site = 'b1'"})
    report("query", type=query.type, device_ids=[item.device_id for item in query.items])
    statistics = registry.get_device_registry_statistics()
    report("statistics", total=statistics.total_device_count, disabled=statistics.disabled_device_count)

    registry.delete_device("sdk-created")
    try:
        registry.get_device("sdk-created")
    except HttpOperationError as exc:
        report("deleted", status=exc.response.status_code)


if __name__ == "__main__":
    main()
