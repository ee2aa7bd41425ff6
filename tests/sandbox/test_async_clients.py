"""The async side (the trigger uses aiohttp) sees the same wire: both body framings and a dropped download."""

from __future__ import annotations

import aiohttp
import pytest
from dexcare.report import REPORTS_PATH

from tests.support.helpers import SANDBOX_TOKEN
from tests.support.sandbox_api import Api

HEADERS = {"Authorization": f"dc-token {SANDBOX_TOKEN}"}


@pytest.mark.parametrize("content_length", [True, False])
async def test_aiohttp_reads_both_framings(make_server, content_length):
    server = make_server(content_length=content_length)
    report_id = Api(server.url).start_id({"type": "retail", "startDate": "2026-11-01", "endDate": "2026-11-04"})
    expected = Api(server.url).data(report_id).content
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        async with session.get(f"{server.url}{REPORTS_PATH}/{report_id}") as response:
            assert await response.json() == {"status": "SUCCEEDED"}
        async with session.get(f"{server.url}{REPORTS_PATH}/{report_id}/data") as response:
            assert response.status == 200
            assert (response.content_length is not None) is content_length
            assert await response.read() == expected


async def test_aiohttp_sees_a_dropped_download_as_a_payload_error(fast):
    report_id = Api(fast.url).start_id()
    fast.inject("drop_download")
    async with (
        aiohttp.ClientSession(headers=HEADERS) as session,
        session.get(f"{fast.url}{REPORTS_PATH}/{report_id}/data") as response,
    ):
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
