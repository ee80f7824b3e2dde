"""Pure helpers of the HTTPS code: proxy URLs, storage trust, storage-info answers, blob wire details."""

from __future__ import annotations

import pytest

import aioiothub
from aioiothub._https.http import proxy_url, storage_ssl_context
from aioiothub.emulator import Emulator
from aioiothub.emulator.storage.blob_sas import StorageAccount
from aioiothub.protocol.blob import blob_url, block_id, block_list_xml


def test_proxy_urls() -> None:
    assert proxy_url(None) is None
    assert proxy_url(aioiothub.ProxyOptions("http", "proxy.local", 3128)) == "http://proxy.local:3128"
    with_credentials = aioiothub.ProxyOptions("socks5", "::1", 1080, username="me", password="p@ss:word")
    assert proxy_url(with_credentials) == "socks5://me:p%40ss%3Aword@[::1]:1080"
    with pytest.raises(ValueError, match="SOCKS4"):
        proxy_url(aioiothub.ProxyOptions("socks4", "proxy.local", 1080))


@pytest.mark.anyio
async def test_storage_context_trusts_the_clients_ca_but_sends_no_certificate() -> None:
    async with Emulator() as hub:
        client_context = hub.client_ssl_context()
    context = storage_ssl_context(client_context)
    trusted = context.get_ca_certs(binary_form=True)
    assert client_context.get_ca_certs(binary_form=True)[0] in trusted
    assert context.check_hostname


def test_storage_info_answer_is_checked() -> None:
    answer = {"correlationId": "c", "hostName": "h:1", "containerName": "ct", "blobName": "d/a b", "sasToken": "?s=1"}
    info = aioiothub.BlobStorageInfo.from_json(answer)
    assert info.sas_url == "https://h:1/ct/d/a%20b?s=1"
    with pytest.raises(aioiothub.ProtocolError, match="sasToken"):
        aioiothub.BlobStorageInfo.from_json({**answer, "sasToken": None})
    with pytest.raises(aioiothub.ProtocolError):
        aioiothub.BlobStorageInfo.from_json([answer])


def test_blob_wire_details() -> None:
    assert block_id(0) == "MDAwMDAw"
    assert block_id(49_999) == "MDQ5OTk5"
    with pytest.raises(ValueError, match="50000"):
        block_id(50_000)
    assert block_list_xml([]) == b'<?xml version="1.0" encoding="utf-8"?><BlockList></BlockList>'
    assert blob_url("h", "c", "d/#1") == "https://h/c/d/%231"


def test_storage_connection_strings() -> None:
    azurite = StorageAccount.parse(
        "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=https://127.0.0.1:10000/devstoreaccount1;"
    )
    assert azurite.host_name == "127.0.0.1:10000/devstoreaccount1"
    assert "a2V5" not in repr(azurite)
    with pytest.raises(ValueError, match="not HTTPS"):
        StorageAccount.parse("AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/a")
    with pytest.raises(ValueError, match="AccountKey"):
        StorageAccount.parse("AccountName=a")
