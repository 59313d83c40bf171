"""The composition root: config, call log, Asterisk and web, wired in one place.

Every part is built here and handed its dependencies; nothing else in the
product reaches for a global. ``Service`` is what ``liyi run`` and ``liyi
demo`` start; tests start it too, against the simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from ari_handlers.ari_client import AriClient
from ari_handlers.controller import CallObserver, Controller
from callflow.roster import Roster
from liyi.settings import AsteriskSettings, Settings

FOLLOWUP_CHECK_SECONDS = 60.0

log = structlog.get_logger("liyi.app")


@dataclass
class LiveState:
    """The controller's live calls and agents, as the web page shows them."""

    controller: Controller

    def live_calls(self) -> list[dict[str, Any]]:
        return [
            {"call_id": call.call_id, "caller_number": call.engine.facts.caller_number,
             "state": call.engine.state.value, "agent": call.engine.facts.agent,
             "since": call.engine.facts.created_at}
            for call in list(self.controller.calls.values())
        ]

    def agents(self) -> list[dict[str, Any]]:
        return [
            {"name": a.name, "endpoint": a.endpoint, "registered": a.registered,
             "device_state": a.device_state, "engaged": a.engaged_by is not None}
            for a in self.controller.roster
        ]


class Service:
    """One running liyi: controller + call log (+ AMI agent presence, + web)."""

    def __init__(self, settings: Settings, asterisk: AsteriskSettings, *,
                 observers: Sequence[CallObserver] = (), web_enabled: bool = True) -> None:
        self.settings = settings
        self.asterisk = asterisk
        self.observers = list(observers)
        self.web_enabled = web_enabled
        self.stop_event = asyncio.Event()
        self.store: Any = None
        self.ari: AriClient | None = None
        self.phones: Any = None
        self.controller: Controller | None = None
        self.desk: Any = None
        self.accounts: Any = None
        self.web_url: str | None = None
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._followup_watch: asyncio.Task[None] | None = None
        self._fallback_watch: asyncio.Task[None] | None = None
        self._fallback_wake = asyncio.Event()

    async def start(self) -> None:
        from db import CallStore  # imported here: the CLI's light commands need no DB stack

        cfg = self.settings.callflow
        self.store = CallStore(self.settings.database_url, journal_path=self.settings.journal_path)
        await self.store.start()
        ast = self.asterisk
        self.ari = AriClient(ast.ari_url, ast.ari_user, ast.ari_password, ast.app,
                             heartbeat_seconds=ast.ari_heartbeat_seconds)
        roster = Roster([(a.name, a.endpoint) for a in cfg.agents],
                        assume_registered=not ast.ami_host, now=time.time())
        self.controller = Controller(config=cfg, ari=self.ari, store=self.store, roster=roster,
                                     app=ast.app, observers=self.observers,
                                     on_connected=self._fallback_wake.set)
        from liyi.desk import AgentDesk

        self.desk = AgentDesk(self.controller, cfg)
        self.controller.observers.append(self.desk)
        if ast.ami_host:
            await self._start_phones(roster)
        self._task = asyncio.get_running_loop().create_task(self.controller.run(self.stop_event))
        self._followup_watch = asyncio.get_running_loop().create_task(self._watch_followups())
        if ast.fallback_log:
            self._start_fallback_import(ast.fallback_log)
        if self.web_enabled:
            await self._start_web()

    async def _watch_followups(self) -> None:
        """Flag promises that passed their due date (R8), in the log and on the agents' panels.

        Checked at start and then every ``FOLLOWUP_CHECK_SECONDS``; the day is
        the center's local date, so a promise due today is overdue from
        tomorrow's first check. A failed check (database down) is retried at
        the next one; nothing here touches a live call.
        """
        cfg = self.settings.callflow
        while not self.stop_event.is_set():
            try:
                now = time.time()
                flagged = await self.store.flag_overdue(today=cfg.local_time(now).date(), at=now)
            except Exception as exc:  # noqa: BLE001 — a database outage must not stop the watch
                log.warning("followups.check_failed", error=str(exc))
                flagged = []
            for followup in flagged:
                log.warning("followup.overdue", followup_id=followup.id, call_id=followup.call_id,
                            owner=followup.owner or "(callback queue)", due=followup.due.isoformat())
            if flagged and self.desk is not None:
                self.desk.followups_changed()
            try:
                await asyncio.wait_for(self.stop_event.wait(), FOLLOWUP_CHECK_SECONDS)
            except TimeoutError:
                pass

    def _start_fallback_import(self, path: str) -> None:
        """Calls the dialplan fallback served while liyi was down reach the log (R10, issue 9).

        Imported after every (re)connect — when the fallback stops taking calls —
        and every 30 s while Asterisk's CEL file grows (``liyi.fallback_import``).
        """
        from liyi.fallback_import import FallbackImporter, watch

        importer = FallbackImporter(path, self.store, self.settings.callflow)
        log.info("fallback_import.watching", path=path)
        self._fallback_watch = asyncio.get_running_loop().create_task(
            watch(importer, self.stop_event, self._fallback_wake))

    async def _start_phones(self, roster: Roster) -> None:
        from ari_handlers.ami_client import AgentPhones, PhoneState

        ast = self.asterisk
        store = self.store

        def on_change(state: PhoneState) -> None:
            agent = roster.phone_state(state.endpoint, registered=state.registered,
                                       device_state=state.device_state)
            if agent is not None:
                log.info("agent.phone", agent=agent.name, registered=state.registered,
                         device_state=state.device_state)
                store.agent_state(agent.name, endpoint=agent.endpoint, registered=state.registered,
                                  device_state=state.device_state, at=time.time())

        endpoints = [a.endpoint.split("/", 1)[-1] for a in self.settings.callflow.agents]
        self.phones = AgentPhones(host=ast.ami_host or "127.0.0.1", port=ast.ami_port,
                                  username=ast.ami_user, secret=ast.ami_secret,
                                  endpoints=endpoints, on_change=on_change,
                                  ping_seconds=ast.ami_ping_seconds)
        await self.phones.start()
        for endpoint in endpoints:  # what AMI knew at login
            on_change(self.phones.state(endpoint))

    async def _start_web(self) -> None:
        from db.accounts import Accounts
        from web.app import create_app

        assert self.controller is not None
        self.accounts = Accounts(self.settings.database_url)
        await self.accounts.start()
        app = create_app(self.store, live=LiveState(self.controller),
                         timezone=self.settings.callflow.timezone,
                         desk=self.desk, accounts=self.accounts)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.web_host, self.settings.web_port)
        await site.start()
        port = self._runner.addresses[0][1] if self._runner.addresses else self.settings.web_port
        self.web_url = f"http://{self.settings.web_host}:{port}/"
        log.info("web.listening", url=self.web_url)
        await self._say_if_no_admin()

    async def _say_if_no_admin(self) -> None:
        """Every admin page refuses until someone signs in: say how the first admin is made."""
        try:
            admins = [a for a in await self.accounts.list_accounts() if a.role == "admin"]
        except Exception as exc:  # noqa: BLE001 - a hint is not worth failing the start for
            log.warning("web.accounts_unreadable", error=repr(exc))
            return
        if not admins:
            log.warning("web.no_admin_account", hint="liyi users add NAME --role admin")

    async def wait_connected(self, timeout: float = 10.0) -> None:
        assert self.controller is not None
        await asyncio.wait_for(self.controller.connected.wait(), timeout)

    async def stop(self) -> None:
        """Stop taking events, let live workers settle, write what the log still holds."""
        self.stop_event.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5.0)
        if self._followup_watch is not None:
            await asyncio.wait([self._followup_watch], timeout=5.0)
        if self._fallback_watch is not None:
            await asyncio.wait([self._fallback_watch], timeout=5.0)
        if self.controller is not None:
            await self.controller.drain(timeout=2.0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.desk is not None:
            await self.desk.close()
        if self.accounts is not None:
            await self.accounts.close()
        if self.phones is not None:
            await self.phones.stop()
        if self.ari is not None:
            await self.ari.close()
        if self.store is not None:
            await self.store.close()
