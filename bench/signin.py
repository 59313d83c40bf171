"""What sign-in and the route gate cost: argon2 per sign-in, and the gate per page request.

Why: the admin and the panel are served by the controller's event loop, which
must keep answering Asterisk. A sign-in hashes with argon2id (production
parameters, argon2-cffi's defaults: 64 MiB, 3 passes) in a worker thread, at
most two at a time (``db.accounts``); this prints how long one takes over
HTTP (argon2 plus the page). Every admin request also goes
through ``web.auth.auth_middleware`` (route lookup, session lookup, CSRF on
changes); this prints what a signed-in API request costs
next to a public route, over real loopback HTTP.

    .venv/bin/python bench/signin.py
    .venv/bin/python bench/signin.py --signins 20 --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import ClientSession, CookieJar, web  # noqa: E402

from db.accounts import Accounts  # noqa: E402
from db.records import CallRecord, CallSummary  # noqa: E402
from web import create_app  # noqa: E402


class EmptyLog:
    async def list_calls(self, limit: int = 20, offset: int = 0) -> list[CallSummary]:
        return []

    async def get_call(self, call_id: str) -> CallRecord | None:
        return None


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _timed_gets(session: ClientSession, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        times.append(time.perf_counter() - start)
    return times


async def main(signins: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        accounts = Accounts(f"sqlite+aiosqlite:///{Path(tmp) / 'acc.db'}")  # production argon2
        await accounts.start()
        await accounts.add("boss", "boss-secret-1", "admin")
        runner, base = await _serve(create_app(EmptyLog(), accounts=accounts))
        try:
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as session:  # an IP host
                durations = []
                for _ in range(signins):
                    session.cookie_jar.clear()
                    async with session.get(base + "/login") as form:
                        token = re.search(r'name="csrf" value="([^"]+)"', await form.text())
                    assert token
                    start = time.perf_counter()
                    async with session.post(base + "/login", allow_redirects=False, data={
                            "name": "boss", "password": "boss-secret-1",
                            "csrf": token.group(1)}) as resp:
                        assert resp.status == 303, resp.status
                    durations.append(time.perf_counter() - start)
                print(f"sign-in (argon2id defaults, over HTTP): median "
                      f"{statistics.median(durations) * 1000:.1f} ms, max "
                      f"{max(durations) * 1000:.1f} ms over {signins}")
                await _timed_gets(session, base + "/api/calls", 50)  # warm up
                gated = await _timed_gets(session, base + "/api/calls", requests)
                open_ = await _timed_gets(session, base + "/healthz", requests)
            print(f"signed-in GET /api/calls (gate + handler): median "
                  f"{statistics.median(gated) * 1e6:.0f} µs")
            print(f"GET /healthz (public, no session lookup): median "
                  f"{statistics.median(open_) * 1e6:.0f} µs")
        finally:
            await runner.cleanup()
            await accounts.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signins", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    asyncio.run(main(args.signins, args.requests))
