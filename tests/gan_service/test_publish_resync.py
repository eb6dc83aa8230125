"""The publisher's resync loop outlives what goes wrong in one period: a published record cut
short, a replica that is down."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

from dreamsuite.artifacts import open_store
from services.gan.publish import Publisher


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_resync_loop_goes_on_past_a_cut_record_and_a_replica_that_is_down(tmp_path, caplog):
    """A record cut short raised ``JSONDecodeError`` out of the resync, which ended its task for
    good: no replica started later got the published models."""
    store = open_store(tmp_path / "store")
    store.put_at("published/cut.json", b'{"version": "2026')
    store.put_at("published/ghost.json", json.dumps({"version": "1"}).encode())
    publisher = Publisher(store, management=f"http://127.0.0.1:{_closed_port()}", resync=0.05)

    async def run_a_while() -> bool:
        task = asyncio.create_task(publisher.run_resync())
        await asyncio.sleep(0.6)
        alive = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return alive

    with caplog.at_level(logging.WARNING, logger="services.gan.publish"):
        assert asyncio.run(run_a_while()), "the resync task ended"
    skipped = [r for r in caplog.records if "published/cut.json is unreadable" in r.getMessage()]
    down = [r for r in caplog.records if "resync of http://127.0.0.1" in r.getMessage()]
    assert len(skipped) >= 2 and len(down) >= 2, "tried again each period"
    assert publisher._published() == {"ghost": "1"}
