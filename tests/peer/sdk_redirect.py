"""The IoT Hub connection-string redirect, as azure-eventhub's IoT Hub sample follows it with uamqp.

Runs under the service peer venv's interpreter (which has uamqp), never under pytest. Argument: an
IoT Hub service connection string. It authenticates with SASL PLAIN (user
``{policy}@sas.root.{hub}``, password a SAS token for the host name), asks for
``messages/events/ConsumerGroups/$Default/Partitions/0``, catches the hub's ``LinkRedirect`` and
prints ``{"step": "redirect", "hostname", "address", "event_hub_connection_string"}`` -- the Event
Hubs connection string the sample builds from it. The CA comes through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sys
import time
import urllib.parse
from typing import Any

from uamqp import ReceiveClient
from uamqp.errors import LinkRedirect


def report(step: str, **values: Any) -> None:
    print(json.dumps({"step": step, **values}, default=str), flush=True)


def sas_token(uri: str, policy: str, key: str, expiry: int) -> str:
    encoded = urllib.parse.quote_plus(uri)
    signed = hmac.new(base64.b64decode(key), f"{encoded}\n{expiry}".encode(), hashlib.sha256).digest()
    fields = {"sr": uri, "sig": base64.b64encode(signed), "se": str(expiry), "skn": policy}
    return "SharedAccessSignature " + urllib.parse.urlencode(fields)


def main() -> None:
    fields = dict(part.split("=", 1) for part in sys.argv[1].split(";") if part)
    hostname = fields["HostName"].split(":")[0]
    policy, key = fields["SharedAccessKeyName"], fields["SharedAccessKey"]
    username = f"{policy}@sas.root.{hostname.split('.')[0]}"
    password = sas_token(hostname, policy, key, int(time.time()) + 3600)
    credentials = f"{urllib.parse.quote_plus(username)}:{urllib.parse.quote_plus(password)}"
    source = f"amqps://{credentials}@{hostname}/messages/events/ConsumerGroups/$Default/Partitions/0"
    client = ReceiveClient(source, timeout=10000, prefetch=1)
    try:
        client.receive_message_batch(max_batch_size=1)
    except LinkRedirect as redirect:
        address = redirect.address.decode("utf-8")
        match = re.search(r":\d+/(?P<name>[^/]+)/ConsumerGroups", address)
        name = match["name"] if match else "?"
        target = redirect.hostname.decode("utf-8")
        connection_string = (
            f"Endpoint=sb://{target}/;SharedAccessKeyName={policy};SharedAccessKey={key};EntityPath={name}"
        )
        report("redirect", hostname=target, address=address, event_hub_connection_string=connection_string)
    else:
        report("no redirect")
    finally:
        client.close()


if __name__ == "__main__":
    main()
