"""The ``liyi`` command line.

Commands: ``demo`` (everything against the simulator), ``run`` (against a
real Asterisk), ``check-config``, ``calls`` (the call log), ``followups``
(promises and callbacks to keep, R8), ``report``, ``users`` (accounts and
roles for the web admin and agent panel), ``agents``, ``prompts``
(build and install the prompt audio), ``asterisk ari-password`` (the hash
for ari.conf), ``import-fallback`` (calls the dialplan fallback served). Errors are one clear line on stderr
and a non-zero exit status; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liyi.settings import ConfigError, Settings, check_file, flow_warnings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = ROOT / "scripts_zh"
RECORDINGS_DIR = ROOT / "recordings"


def known_prompts() -> set[str]:
    """Prompt names a config may use: one per text, templates expanded (hold-announce-30 …)."""
    from liyi.prompts import prompts_in

    return prompts_in(SCRIPTS_DIR)


def _settings(path: str | None, db: str | None = None) -> Settings:
    settings = load_settings(Path(path) if path else None, known_prompts=known_prompts())
    if db:
        from dataclasses import replace
        settings = replace(settings, database_url=_db_url(db))
    return settings


def _db_url(value: str) -> str:
    return value if "://" in value else f"sqlite+aiosqlite:///{value}"


def _text_of(company: str) -> Callable[[str], str]:
    """A prompt's spoken text by name, or "(no text)" — never an error for a missing one."""
    from liyi.prompts import render_text

    def text_of(name: str) -> str:
        try:
            return render_text(name, company, SCRIPTS_DIR)
        except Exception:  # noqa: BLE001 — a prompt with no text: say so rather than fail
            return "(no text)"

    return text_of


def cmd_check_config(args: argparse.Namespace) -> int:
    """Problems refuse the config (exit 1); warnings are printed and it is still accepted."""
    from liyi.simulate import PromptClock

    path = Path(args.file)
    problems = check_file(path, known_prompts=known_prompts())
    if problems:
        print(f"{args.file}: {len(problems)} problem{'s' if len(problems) > 1 else ''}",
              file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    cfg = load_settings(path, known_prompts=known_prompts()).callflow
    clock = PromptClock(RECORDINGS_DIR / "liyi", _text_of(cfg.company))
    warnings = flow_warnings(path, cfg, clock.seconds)
    for w in warnings:
        print(f"  warning: {w}", file=sys.stderr)
    count = f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''})" if warnings else ""
    print(f"{args.file}: OK{count}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from liyi import demo
    from liyi.logging_setup import configure

    configure("warning")
    settings = _settings(args.config, args.db)
    if args.web_port is not None:
        from dataclasses import replace
        settings = replace(settings, web_port=args.web_port)
    return demo.main(settings, once=args.once, fast=args.fast)


def cmd_simulate(args: argparse.Namespace) -> int:
    """What a caller would hear at a moment, with the keys they press; no phone, no Asterisk."""
    from liyi.simulate import PromptClock, describe_day, parse_moment, render, simulate

    path = args.config
    if path is None and Path("liyi.yaml").exists():
        path = "liyi.yaml"
    settings = _settings(path)
    cfg = settings.callflow
    try:
        at = parse_moment(args.at, cfg)
    except ValueError as exc:
        print(f"--at {exc}", file=sys.stderr)
        return 2
    keys = args.keys or ""
    bad = [k for k in keys if k not in "0123456789*#"]
    if bad:
        print(f"--keys {keys!r}: only 0-9, * and # can be pressed on a phone", file=sys.stderr)
        return 2

    text_of = _text_of(cfg.company)
    clock = PromptClock(RECORDINGS_DIR / "liyi", text_of)
    outcome = simulate(cfg, at, keys, caller_number=args.caller, prompt_clock=clock, text_of=text_of)
    print(f"config: {path or '(built-in defaults)'}")
    for line in render(outcome, describe_day(at, cfg), max_seconds_to_agent=cfg.max_seconds_to_agent):
        print(line)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from liyi.app import Service
    from liyi.logging_setup import configure

    configure(args.log_level)
    settings = _settings(args.config)
    if settings.asterisk is None:
        print(f"{args.config}: no `asterisk:` section — nothing to connect to "
              "(try `liyi demo` for the simulator)", file=sys.stderr)
        return 2
    if not settings.asterisk.ari_password:
        print("LIYI_ARI_PASSWORD is not set: the ARI password comes from the environment",
              file=sys.stderr)
        return 2

    async def go() -> None:
        assert settings.asterisk is not None
        service = Service(settings, settings.asterisk)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, service.stop_event.set)
        await service.start()
        print(f"liyi running: ARI {settings.asterisk.ari_url} app {settings.asterisk.app}; "
              f"web {service.web_url}; Ctrl-C to stop", file=sys.stderr)
        await service.stop_event.wait()
        await service.stop()

    asyncio.run(go())
    return 0


def _fmt_time(value: dt.datetime | None, tz: Any) -> str:
    if value is None:
        return "-"
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _compliance_line(compliance: dict[str, Any]) -> str:
    marks = {"kept": "✓", "broken": "✗", "not_applicable": "–"}
    parts = []
    for rule in sorted(compliance, key=lambda r: int(r[1:])):
        status = compliance[rule][0] if isinstance(compliance[rule], tuple) else compliance[rule]
        parts.append(f"{rule}{marks.get(str(status), '?')}")
    return " ".join(parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def cmd_calls(args: argparse.Namespace) -> int:
    settings = _settings(args.config, args.db)
    tz = settings.callflow.tz

    async def go() -> int:
        from dataclasses import asdict

        from db import CallStore

        store = CallStore(settings.database_url)
        await store.start()
        try:
            if args.action == "show":
                if not args.id:
                    print("usage: liyi calls show ID", file=sys.stderr)
                    return 2
                from db.records import AmbiguousCallId

                try:
                    record = await store.get_call(args.id)
                except AmbiguousCallId as exc:
                    print(str(exc), file=sys.stderr)
                    return 1
                if record is None:
                    print(f"no call {args.id!r} in {settings.database_url}", file=sys.stderr)
                    return 1
                if args.json:
                    print(json.dumps(_jsonable(asdict(record)), ensure_ascii=False))
                else:
                    print_call(record, tz, events=args.events)
                return 0
            calls = await store.list_calls(limit=args.limit)
            if args.json:
                for call in calls:
                    print(json.dumps(_jsonable(asdict(call)), ensure_ascii=False))
                return 0
            if not calls:
                print(f"no calls yet in {settings.database_url}")
                return 0
            print(f"{'id':12}  {'first ring':19}  {'caller':16}  {'agent':8}  {'outcome':18}  "
                  f"{'1st hang-up':11}  {'by':8}  compliance")
            for call in calls:
                print(f"{call.id[:12]:12}  {_fmt_time(call.created_at, tz):19}  "
                      f"{(call.caller_number or '-')[:16]:16}  {(call.agent or '-')[:8]:8}  "
                      f"{(call.outcome or call.state or 'live')[:18]:18}  "
                      f"{(call.first_hangup or '-'):11}  {call.handled_by[:8]:8}  "
                      f"{_compliance_line(call.compliance)}")
            return 0
        finally:
            await store.close()

    return asyncio.run(go())


def print_call(record: Any, tz: Any, *, events: bool = False) -> None:
    """A call as text: its fields, timeline, compliance record and follow-ups."""
    print(f"call {record.id}")
    print(f"  caller       {record.caller_number or '-'} {record.caller_name or ''}".rstrip())
    print(f"  first ring   {_fmt_time(record.created_at, tz)}")
    print(f"  answered     {_fmt_time(record.answered_at, tz)}")
    print(f"  ended        {_fmt_time(record.ended_at, tz)}")
    print(f"  agent        {record.agent or '-'}")
    print(f"  outcome      {record.outcome or record.state or 'live'}")
    print(f"  first hangup {record.first_hangup or '-'}")
    print(f"  handled by   {getattr(record, 'handled_by', 'liyi')}")
    print("timeline")
    start = record.created_at
    for entry in record.timeline:
        if entry.source == "event" and not events:
            continue
        offset = (entry.at - start).total_seconds() if start else 0.0
        detail = " ".join(_fmt_detail(k, v, start) for k, v in (entry.detail or {}).items()
                          if k not in ("type",) and v not in ("", None))
        src = "  <" if entry.source == "event" else "   "
        print(f"{src} +{offset:7.2f}s  {entry.kind:22} {detail}")
    print("compliance")
    for rule in sorted(record.compliance, key=lambda r: int(r[1:])):
        status, evidence = record.compliance[rule]
        shown = {k: _fmt_time(dt.datetime.fromtimestamp(v, dt.UTC), tz)
                 if k.endswith("_at") and isinstance(v, (int, float)) else v
                 for k, v in evidence.items()}
        print(f"  {rule:4} {status:15} {json.dumps(shown, ensure_ascii=False)}")
    followups = getattr(record, "followups", ())
    if followups:
        today = _now().astimezone(tz).date()
        print("follow-ups")
        for f in followups:
            print(f"  {f.id[:8]:8}  due {f.due.isoformat()}  "
                  f"{_cell(_state_label(f.status(today)), 12)}  {_owner_label(f)}  "
                  f"{f.number or '-'}  {f.text or '-'}")


def _fmt_detail(key: str, value: Any, start: dt.datetime | None) -> str:
    """Epoch times in a timeline entry read as offsets from the first ring."""
    if key.endswith("_at") and isinstance(value, (int, float)) and start is not None:
        return f"{key}=+{value - start.timestamp():.2f}s"
    return f"{key}={value}"


def _state_label(status: str) -> str:
    return "逾期 OVERDUE" if status == "overdue" else status


def _owner_label(followup: Any) -> str:
    """The agent who owns it, or the queue an unowned callback waits in."""
    if followup.owner:
        return str(followup.owner)
    return f"callback queue {followup.queue or 'general'}"


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(text: str, width: int) -> str:
    """``text`` cut and padded to ``width`` terminal columns, so CJK text keeps columns aligned."""
    out, used = [], 0
    for ch in text.replace("\n", " "):
        w = _width(ch)
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(out) + " " * (width - used)


def _now() -> dt.datetime:
    """The current instant (one place, so tests can pin "today")."""
    return dt.datetime.now(dt.UTC)


def cmd_import_fallback(args: argparse.Namespace) -> int:
    """Import the calls Asterisk's dialplan fallback served (its CEL file) into the call log, once each."""
    settings = _settings(args.config, args.db)
    path = args.file or (settings.asterisk.fallback_log if settings.asterisk else None)
    if not path:
        print("no CEL file to read: give --file, or set asterisk.fallback_log in the config",
              file=sys.stderr)
        return 2

    async def go() -> int:
        from db import CallStore
        from liyi.fallback_import import FallbackImporter

        store = CallStore(settings.database_url)
        await store.start()
        try:
            report = await FallbackImporter(path, store, settings.callflow).run_once()
        except PermissionError as exc:
            print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"cannot import from {path}: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()
        for bad in report.bad:
            print(f"{path}:{bad.line}: skipped: {bad.reason}: {bad.text}", file=sys.stderr)
        print(report.summary_line())
        return 0 if report.found else 1

    return asyncio.run(go())


def cmd_followups(args: argparse.Namespace) -> int:
    """Follow-ups to keep (R8): overdue first, then open by due day; ``done ID`` closes one.

    "Today" is the center's local date (``company.timezone``). Listing also
    flags follow-ups newly overdue, so the call log gets its "followup-overdue"
    entry and R8 verdict even when the controller is not running.
    """
    from sqlalchemy.exc import SQLAlchemyError

    settings = _settings(args.config, args.db)
    tz = settings.callflow.tz
    now = _now()
    today = now.astimezone(tz).date()

    async def go() -> int:
        from db import AmbiguousFollowUpId, CallStore

        store = CallStore(settings.database_url)
        await store.start()
        try:
            if args.action == "done":
                return await _followup_done(store, args.id, now, tz, settings.database_url,
                                            AmbiguousFollowUpId)
            flagged = await store.flag_overdue(today=today, at=now.timestamp())
            followups = await store.list_followups(owner=args.owner, include_done=args.all,
                                                   today=today)
        finally:
            await store.close()
        if flagged:
            print(f"flagged {len(flagged)} newly overdue follow-up{'s' if len(flagged) > 1 else ''}"
                  " in the call log (timeline entry, R8 broken)", file=sys.stderr)
        if args.json:
            for f in followups:
                from dataclasses import asdict

                print(json.dumps(_jsonable({**asdict(f), "status": f.status(today)}),
                                 ensure_ascii=False))
            return 0
        whose = f" for {args.owner}" if args.owner else ""
        if not followups:
            what = "follow-ups" if args.all else "open follow-ups"
            print(f"no {what}{whose} in {settings.database_url}")
            return 0
        overdue = sum(f.status(today) == "overdue" for f in followups)
        print(f"today {today.isoformat()} ({settings.callflow.timezone}): {len(followups)} "
              f"follow-up{'s' if len(followups) > 1 else ''}{whose}, {overdue} overdue")
        print(f"{_cell('id', 8)}  {_cell('due', 10)}  {_cell('state', 12)}  "
              f"{_cell('owner', 22)}  {_cell('number', 14)}  {_cell('text', 30)}  call")
        for f in followups:
            print(f"{_cell(f.id, 8)}  {f.due.isoformat()}  {_cell(_state_label(f.status(today)), 12)}"
                  f"  {_cell(_owner_label(f), 22)}  {_cell(f.number or '-', 14)}  "
                  f"{_cell(f.text or '-', 30)}  {f.call_id[:12]}")
        return 0

    try:
        return asyncio.run(go())
    except (SQLAlchemyError, OSError) as exc:
        print(f"call log unavailable ({settings.database_url}): {exc.__class__.__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1


async def _followup_done(store: Any, followup_id: str | None, now: dt.datetime, tz: Any,
                         url: str, ambiguous: type[Exception]) -> int:
    """``liyi followups done ID``: mark one follow-up done by "admin"."""
    if not followup_id:
        print("usage: liyi followups done ID", file=sys.stderr)
        return 2
    try:
        found = await store.get_followup(followup_id)
    except ambiguous as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if found is None:
        print(f"no follow-up {followup_id!r} in {url}", file=sys.stderr)
        return 1
    if found.state == "done":
        when = (_fmt_time(dt.datetime.fromtimestamp(found.done_at, dt.UTC), tz)
                if found.done_at is not None else "-")
        print(f"follow-up {found.id} was already done (by {found.done_by or '-'} at {when})")
        return 0
    done = await store.complete_followup(found.id, by="admin", at=now.timestamp())
    if done is None:
        print(f"follow-up {found.id} disappeared before it could be marked done", file=sys.stderr)
        return 1
    print(f"follow-up {done.id} done by {done.done_by}: {done.text or '-'} "
          f"(due {done.due.isoformat()}, call {done.call_id})")
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from liyi import prompts

    try:
        return _prompts(args, prompts)
    except prompts.PromptError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def _prompts(args: argparse.Namespace, prompts: Any) -> int:
    if args.action == "build":
        settings = _settings(args.config)
        built = prompts.build_prompts(SCRIPTS_DIR, RECORDINGS_DIR,
                                      company=settings.callflow.company)
        print(f"{len(built)} prompts in {RECORDINGS_DIR / 'liyi'}")
        return 0
    if args.action == "install":
        if not args.dir:
            print("usage: liyi prompts install DIR (e.g. /var/lib/asterisk/sounds)", file=sys.stderr)
            return 2
        installed = prompts.install_prompts(RECORDINGS_DIR, Path(args.dir))
        print(f"{len(installed)} files installed under {args.dir}")
        return 0
    return 2


def cmd_report(args: argparse.Namespace) -> int:
    """Compliance rates per agent, per queue or per day (R12), from the calls in the log."""
    from callflow.compliance import rates

    settings = _settings(args.config, args.db)
    tz = settings.callflow.tz

    async def load() -> list[Any]:
        from db import CallStore

        store = CallStore(settings.database_url)
        await store.start()
        try:
            return await store.list_calls(limit=args.limit)
        finally:
            await store.close()

    calls = [c for c in asyncio.run(load()) if c.ended_at is not None]
    if not calls:
        print(f"no ended calls yet in {settings.database_url}")
        return 0
    by = args.by

    def group_of(call: Any) -> str:
        if by == "agent":
            return call.agent or "—"
        if by == "queue":  # R12: rates per queue ("all" = the general queue)
            return "—" if call.queue is None else (call.queue or "all")
        return str(call.created_at.astimezone(tz).strftime("%Y-%m-%d"))

    rows = [(group_of(c), c.compliance) for c in calls]
    table = rates(rows)
    rules = sorted({r for cells in table.values() for r in cells}, key=lambda r: int(r[1:]))
    if args.json:
        print(json.dumps({"by": by, "calls": len(calls), "rates": table}, ensure_ascii=False))
        return 0
    print(f"compliance by {by} — {len(calls)} ended calls (kept / judged; – never applied)")
    print(f"{by:12}" + "".join(f"{r:>12}" for r in rules))
    for key in sorted(table):
        cells = []
        for rule in rules:
            cell = table[key].get(rule)
            judged = int(cell["kept"]) + int(cell["broken"]) if cell else 0
            cells.append(f"{'–':>12}" if not judged
                         else f"{100 * float(cell['rate']):5.0f}% {int(cell['kept']):>2}/{judged:<2}")  # type: ignore[index]
        print(f"{key[:12]:12}" + "".join(cells))
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    """Set an agent's panel password (stored as an argon2 hash, never in the repo or config)."""
    import getpass

    from db.accounts import AccountError, set_agent_password

    settings = _settings(args.config, args.db)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ; nothing changed", file=sys.stderr)
            return 1
    try:
        asyncio.run(set_agent_password(settings.database_url, args.name, password))
    except AccountError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"password set for {args.name}")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    """Accounts and roles for the web admin and the agent panel (``liyi.users``)."""
    from liyi import users

    return users.run(args, _settings(args.config, args.db).database_url)


def cmd_asterisk(args: argparse.Namespace) -> int:
    """Print the crypt(3) hash for ari.conf, so the file never holds the ARI password itself.

    The password comes from LIYI_ARI_PASSWORD (the very variable ``liyi run``
    logs in with, so the two cannot drift apart), else from a prompt typed
    twice; never from the command line, where ``ps`` and shell history see it.
    """
    import getpass

    from liyi.ari_password import ari_password_hash

    password = os.environ.get("LIYI_ARI_PASSWORD", "")
    if not password:
        if not sys.stdin.isatty():
            print("set LIYI_ARI_PASSWORD, or run this in a terminal to be asked for it",
                  file=sys.stderr)
            return 1
        password = getpass.getpass("ARI password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ; nothing printed", file=sys.stderr)
            return 1
    try:
        print(ari_password_hash(password))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liyi", description="Telephone etiquette on Asterisk.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the controller and web admin against the Asterisk simulator")
    d.add_argument("--once", action="store_true", help="exit when the demo calls have ended")
    d.add_argument("--fast", action="store_true", help="short rings and prompts (a quick look)")
    d.add_argument("--config", help="a liyi.yaml to take the call flow from (its asterisk: is ignored)")
    d.add_argument("--db", help="call log: SQLite file or SQLAlchemy URL (default liyi.db)")
    d.add_argument("--web-port", type=int, help="web admin port (default 8080)")
    d.set_defaults(fn=cmd_demo)

    r = sub.add_parser("run", help="run the controller against a real Asterisk")
    r.add_argument("--config", required=True)
    r.add_argument("--log-level", default="info")
    r.set_defaults(fn=cmd_run)

    sm = sub.add_parser("simulate", help="what a caller would hear at a given time, and where "
                                         "the call would go (no phone needed)")
    sm.add_argument("--at", required=True, help='the center\'s local time, e.g. "2026-12-01 19:30"')
    sm.add_argument("--keys", default="", help="keys the caller presses when asked, e.g. 2 or 1#")
    sm.add_argument("--caller", default="13800138000", help="the caller's number (caller id)")
    sm.add_argument("--config", help="the config to simulate (default ./liyi.yaml if present)")
    sm.set_defaults(fn=cmd_simulate)

    cc = sub.add_parser("check-config", help="validate a config file and list every problem")
    cc.add_argument("file")
    cc.set_defaults(fn=cmd_check_config)

    c = sub.add_parser("calls", help="the call log: recent calls, or one call's timeline")
    c.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    c.add_argument("id", nargs="?")
    c.add_argument("--config")
    c.add_argument("--db", help="SQLite file or SQLAlchemy URL (default from config / liyi.db)")
    c.add_argument("--limit", type=int, default=20)
    c.add_argument("--json", action="store_true", help="one JSON object per call")
    c.add_argument("--events", action="store_true", help="with show: also the raw engine events")
    c.set_defaults(fn=cmd_calls)

    fb = sub.add_parser("import-fallback",
                        help="bring the calls Asterisk's dialplan fallback served into the call "
                             "log (each once, handled_by fallback)")
    fb.add_argument("--file", help="Asterisk's CEL file (default: asterisk.fallback_log)")
    fb.add_argument("--config")
    fb.add_argument("--db", help="SQLite file or SQLAlchemy URL (default from config / liyi.db)")
    fb.set_defaults(fn=cmd_import_fallback)

    rp = sub.add_parser("report", help="compliance rates per agent, queue or day (R12)")
    rp.add_argument("--by", choices=["agent", "queue", "day"], default="agent")
    rp.add_argument("--limit", type=int, default=10000, help="how many recent calls to count")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--config")
    rp.add_argument("--db", help="SQLite file or SQLAlchemy URL (default from config / liyi.db)")
    rp.set_defaults(fn=cmd_report)

    ag = sub.add_parser("agents", help="agent accounts for the web agent panel")
    ag.add_argument("action", choices=["set-password"])
    ag.add_argument("name")
    ag.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    ag.add_argument("--config")
    ag.add_argument("--db", help="SQLite file or SQLAlchemy URL (default from config / liyi.db)")
    ag.set_defaults(fn=cmd_agents)

    from liyi.users import add_parser as add_users_parser
    add_users_parser(sub, cmd_users)

    fu = sub.add_parser("followups",
                        help="promises and callbacks to keep (R8): overdue first; `done ID` closes one")
    fu.add_argument("action", nargs="?", choices=["list", "done"], default="list")
    fu.add_argument("id", nargs="?", help="with done: the follow-up's id or a unique prefix")
    fu.add_argument("--all", action="store_true", help="also the follow-ups already done")
    fu.add_argument("--owner", help="only this agent's follow-ups (and unowned callbacks)")
    fu.add_argument("--json", action="store_true", help="one JSON object per follow-up")
    fu.add_argument("--config")
    fu.add_argument("--db", help="SQLite file or SQLAlchemy URL (default from config / liyi.db)")
    fu.set_defaults(fn=cmd_followups)

    pr = sub.add_parser("prompts", help="build prompt audio from scripts_zh/, or install it")
    pr.add_argument("action", choices=["build", "install"])
    pr.add_argument("dir", nargs="?")
    pr.add_argument("--config")
    pr.set_defaults(fn=cmd_prompts)

    ak = sub.add_parser("asterisk", help="Asterisk configuration helpers")
    ak.add_argument("action", choices=["ari-password"],
                    help="ari-password: print the crypt hash of LIYI_ARI_PASSWORD for ari.conf")
    ak.set_defaults(fn=cmd_asterisk)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from liyi.logging_setup import configure

    configure("warning")  # `run` and `demo` set their own level
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print("config problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
