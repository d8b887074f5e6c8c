"""Fault drill: the county controller is killed with SIGKILL in the middle of a call.

The caller still hears the dialplan's fallback notice (the call ends with Q.850 cause 41
from the fallback branch rather than silence), every ticket committed before the crash
reaches the city once the controller is started again, and the next call is handled
normally. Parameters: one crash in `make test`; with HOTLINE_SOAK=1 (`make soak`) the
crash and restart are repeated three times.
"""

import asyncio
import os
import time

import pytest

from hotline.demo import CITY, COUNTY, DemoStack, prompt_seconds, standard_calls, wait_for_city
from stack.asterisk import FALLBACK_HANGUP_CAUSE
from stack.sipp import EndedBy
from storage.ticket_store import TicketStore

pytestmark = pytest.mark.integration

CRASHES = 3 if os.environ.get("HOTLINE_SOAK") == "1" else 1


async def _tickets(work_dir, node):
    async with await TicketStore.open(work_dir / f"{node['node_id'].split('-')[0]}.sqlite3",
                                      node["node_id"], node["region_code"]) as store:
        return {t.ticket_id: t.last_seq for t in await store.list_tickets()}, await store.check_integrity()


def test_controller_crash_mid_call(tmp_path):
    calls = standard_calls()
    dibao, linshi = calls[0], calls[1]
    # Kill while the category prompt plays: the ticket is committed, the call not yet queued.
    kill_after_s = (prompt_seconds("welcome") + 1.5) + 1.0

    with DemoStack(tmp_path) as stack:
        for _ in range(CRASHES):
            caller = stack.caller(linshi)
            caller.start()
            time.sleep(kill_after_s)
            stack.county.kill()
            crashed_call = caller.wait(timeout_s=60)[0]
            caller.close()

            stack.county.start()
            answered = stack.place_call(dibao)

            assert crashed_call.ended_by is EndedBy.REMOTE
            assert crashed_call.cause == FALLBACK_HANGUP_CAUSE
            assert answered.completed

        asyncio.run(wait_for_city(tmp_path))
        county, county_check = asyncio.run(_tickets(tmp_path, COUNTY))
        city, city_check = asyncio.run(_tickets(tmp_path, CITY))

    assert county_check == "ok"
    assert city_check == "ok"
    # One ticket per crashed call (opened before the crash) and one per normal call.
    assert len(county) == 2 * CRASHES
    assert city == county
