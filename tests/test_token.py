"""Beyond loopback a token is required; with one, every request must carry it, and it goes
no further than tapewire."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from conftest import settings_for, stored
from fakeprovider import FakeProvider
from tapewire.service import Service, ServiceThread
from tapewire.store.location import DbRef


def test_listening_beyond_loopback_needs_a_token(fake: FakeProvider, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without --token"):
        Service(settings_for(fake, tmp_path, host="0.0.0.0"))


async def test_token_is_required_and_never_forwarded_or_stored(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    with ServiceThread(settings_for(fake, tmp_path, db=db, token="team-token-123")) as service:
        async with aiohttp.ClientSession() as http:
            url = service.url + "/v1/chat/completions"
            async with http.post(url, data=b"{}") as resp:
                assert resp.status == 401
                assert "x-tapewire-token" in await resp.text()
            async with http.post(
                url, data=b"{}", headers={"x-tapewire-token": "team-token-123"}
            ) as resp:
                assert resp.status == 200
        (row,) = stored(service).exchanges()
    assert len(fake.received) == 1
    assert "x-tapewire-token" not in {k.lower() for k, _ in fake.received[0].headers}
    assert ("x-tapewire-token", "") in row.request_headers
