"""Entry script: the official file-upload sample's steps with the unmodified SDK and ``azure-storage-blob``.

Run with the peer virtual environment's interpreter as ``sdk_upload.py CONNECTION_STRING CA_FILE``;
pytest does not collect it. ``get_storage_info_for_blob`` (HTTPS to 443), an upload with
``BlobClient.from_blob_url`` (one Put Blob, then one in 4 KiB blocks), ``notify_blob_upload_status``;
each step reported as one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from azure.iot.device.aio import IoTHubDeviceClient
from azure.storage.blob import BlobClient

BLOCKS_DATA = bytes(index % 251 for index in range(20_000))


def report(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def upload(info: dict[str, Any], data: bytes, ca_file: str) -> None:
    sas_url = "https://{}/{}/{}{}".format(info["hostName"], info["containerName"], info["blobName"], info["sasToken"])
    blob = BlobClient.from_blob_url(sas_url, max_single_put_size=4096, max_block_size=4096, connection_verify=ca_file)
    blob.upload_blob(data)


async def main(connection_string: str, ca_file: str, ca_pem: str) -> None:
    client = IoTHubDeviceClient.create_from_connection_string(connection_string, server_verification_cert=ca_pem)
    await client.connect()
    for name, data in (("single.txt", b"Hello, World!"), ("blocks.bin", BLOCKS_DATA)):
        info = await client.get_storage_info_for_blob(name)
        report(step="storage_info", info={key: value for key, value in info.items() if key != "sasToken"})
        await asyncio.to_thread(upload, info, data, ca_file)
        await client.notify_blob_upload_status(info["correlationId"], True, 200, "uploaded by azure-storage-blob")
        report(step="uploaded", name=name)
    await client.shutdown()
    report(step="done")


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with open(sys.argv[2], encoding="ascii") as file:
        pem = file.read()
    asyncio.run(main(sys.argv[1], sys.argv[2], pem))
