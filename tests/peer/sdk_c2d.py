"""Microsoft's Python service SDK (``azure-iot-hub``) sends cloud-to-device messages over AMQP, as a script would.

Runs under the service peer venv's interpreter, never under pytest, so it imports nothing from
aioiothub. Arguments: the service connection string, then the device ids to send to. For each, one
``send_c2d_message`` call (uamqp, AMQPS on 5671, trusting the emulator's CA through
``SSL_CERT_FILE``) and one JSON line ``{"step": "sent", "device_id": …}``; a refused send prints
``{"step": "refused", "device_id": …, "error": …}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from azure.iot.hub import IoTHubRegistryManager


def report(step: str, **values: Any) -> None:
    print(json.dumps({"step": step, **values}, default=str), flush=True)


def main() -> None:
    connection_string, *device_ids = sys.argv[1:]
    registry = IoTHubRegistryManager.from_connection_string(connection_string)
    for index, device_id in enumerate(device_ids):
        properties = {
            "messageId": f"svc-{index}",
            "correlationId": f"corr-{index}",
            "contentType": "application/json",
            "contentEncoding": "utf-8",
            "room": "lab",
        }
        try:
            registry.send_c2d_message(device_id, json.dumps({"n": index}), properties=properties)
        except Exception as exc:  # the SDK raises its own and uamqp's error types
            report("refused", device_id=device_id, error=f"{type(exc).__name__}: {exc}")
        else:
            report("sent", device_id=device_id)
    report("done")


if __name__ == "__main__":
    main()
