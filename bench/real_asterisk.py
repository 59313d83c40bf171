"""N real SIP calls through a real Asterisk 22 and `liyi run`; prints figures (issue 8).

The simulator benchmark (``bench/concurrent_calls.py``) measures the controller
alone. This one measures what a carrier and a caller would: one SIPp process
places every call from the carrier address into a private Asterisk loaded with
``asterisk-conf/`` (``tests/asterisk_rig.py``), with the shipped prompts
(``recordings/liyi``, not trimmed), and auto-answering baresip agents take them.
Each call is an ordinary one of about 45 s: ring, answer, greeting, menu key 1
(咨询), queue, an agent answers, the bridge, about ``--talk-seconds`` of talk,
the caller hangs up.

Figures, each from the party that knows it:

- calls attempted / answered and SIPp's verdict (successful / failed) — SIPp's
  own statistics and its per-call message trace;
- answer time INVITE → 200 OK, p50/p99/max, per Call-ID from that trace;
- calls connected to an agent — the call log liyi wrote (``db.CallStore``, read
  after liyi stopped, so every write has landed);
- Asterisk and controller CPU ms per call — utime+stime (all threads, and any
  waited-for children) from ``/proc/<pid>/stat`` before the first call and
  after the last, divided by the calls attempted — and their ratio;
- the controller's peak RSS (``VmHWM``);
- BYEs the service sent to a caller: must be 0 (R9: never hang up first).

A plain-text report, then one JSON line for machines. Progress goes to stderr.
Not part of the test suite: it asserts nothing and its figures depend on the
machine.

    .venv/bin/python bench/real_asterisk.py                      # 100 calls, 50 at once, 5/s
    .venv/bin/python bench/real_asterisk.py --calls 10 --concurrent 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.asterisk_rig import (  # noqa: E402 - after the path is set
    AGENT_PASSWORD,
    CARRIER_IP,
    CallerPlan,
    LiyiProcess,
    PrivateAsterisk,
    find_prefix,
    free_port,
    rig_config,
    tools_missing,
)

SERVICE_NUMBER = "4008001234"
CALLER_NUMBER = "1380000[call_number]"  # SIPp fills in 1, 2, …: each call its own caller
MENU_KEY_AT = 7.0         # s after the 200 OK: the greeting (6.1 s) is over, the menu is playing
CONNECT_ALLOWANCE = 5.0   # s from the key to the agent: ring-wait (4.9 s) is said before agents ring
ACCOUNTS_PER_BARESIP = 10  # agents per baresip process: few processes, none too busy
RTP_PORTS = 2000          # Asterisk's RTP range: two ports per channel, callers and agents


def say(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- the load


@dataclass(frozen=True)
class Load:
    """What the run places: how many calls, how many at once, how fast, how long each talks."""

    calls: int
    concurrent: int
    rate: float
    talk_seconds: float
    agents: int
    timeout: float

    def caller(self) -> CallerPlan:
        """One scenario for every call: menu key 1 during the menu, hang up after the talk."""
        return CallerPlan(number=CALLER_NUMBER, keys=((MENU_KEY_AT, "1"),),
                          hang_up_after=MENU_KEY_AT + CONNECT_ALLOWANCE + self.talk_seconds)

    @property
    def agent_names(self) -> list[str]:
        return [f"agent{i}" for i in range(1, self.agents + 1)]


# ----------------------------------------------------------------- more agents on the private Asterisk


def add_agent_endpoints(ast: PrivateAsterisk, names: list[str]) -> None:
    """Append the agents asterisk-conf/ does not ship, built on its own templates.

    agent1 and agent2 are in the shipped pjsip.conf already; the rest are what
    an admin would add by copying them ("More agents: copy the three agent2 sections").
    """
    conf = ast.etc / "pjsip.conf"
    have = set(re.findall(r"^\[(agent\d+)\]\(agent-endpoint-tpl\)", conf.read_text(), re.MULTILINE))
    extra = "".join(
        f"\n; {name} (bench)\n[{name}](agent-endpoint-tpl)\nauth = {name}\naors = {name}\n"
        f"callerid = \"{name}\" <{name}>\n\n[{name}](agent-aor-tpl)\n\n"
        f"[{name}](agent-auth-tpl)\nusername = {name}\npassword = {AGENT_PASSWORD}\n"
        for name in names if name not in have)
    with conf.open("a", encoding="utf-8") as out:
        out.write(extra)


def widen_rtp(ast: PrivateAsterisk, ports: int = RTP_PORTS) -> None:
    """The rig's 200 RTP ports serve 100 channels; 50 callers with 50 agents need more."""
    (ast.etc / "rtp.conf").write_text(
        f"[general]\nrtpstart = {ast.rtp_start}\nrtpend = {ast.rtp_start + ports - 1}\n",
        encoding="utf-8")


def registered_agents(ast: PrivateAsterisk) -> set[str]:
    """Agents with a contact, as Asterisk itself sees them."""
    return set(re.findall(r"Contact:\s+(agent\d+)/sip:", ast.rx("pjsip show contacts")))


# ----------------------------------------------------------------- baresip agents, many per process


class AgentBank:
    """One baresip process registering several agents, each answering at once.

    A process per agent would be 50 processes on a 2-core machine; one per ten
    keeps the phones out of the way of what is measured.
    """

    def __init__(self, names: list[str], ast: PrivateAsterisk, home: Path) -> None:
        self.names = names
        self.ast = ast
        self.home = home
        self.proc: asyncio.subprocess.Process | None = None

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config").write_text(
            f"poll_method epoll\nsip_listen 127.0.0.1:{free_port(socket.SOCK_DGRAM)}\n"
            "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule ausine.so\n"
            "module aufile.so\nmodule_app account.so\nmodule_app menu.so\n"
            "audio_source ausine,440\naudio_player aufile,/dev/null\naudio_alert aufile,/dev/null\n"
            # as the rig's Softphone: ausine only makes 48 kHz (at 8 kHz the source fails
            # and baresip drops the call it has just answered)
            "ausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\nauplay_channels 1\n"
            f"call_max_calls {len(self.names) * 2}\nrtp_ports 40000-49999\n", encoding="utf-8")
        (self.home / "accounts").write_text("".join(
            f"<sip:{name}@127.0.0.1:{self.ast.sip_port};transport=udp>;auth_pass={AGENT_PASSWORD}"
            ";regint=600;answermode=auto;audio_codecs=PCMA,PCMU\n" for name in self.names),
            encoding="utf-8")

    async def start(self) -> None:
        self._write_config()
        with open(self.home / "baresip.log", "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                "baresip", "-f", str(self.home), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True)

    async def stop(self) -> None:
        await stop_process(self.proc)


async def stop_process(proc: asyncio.subprocess.Process | None, grace: float = 5.0) -> None:
    """SIGTERM to the process group (started in its own session), SIGKILL if it lingers."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def wait_registered(ast: PrivateAsterisk, names: list[str], timeout: float) -> None:
    """Until Asterisk has a contact for every agent; says which are missing if not."""
    deadline = time.monotonic() + timeout
    while True:
        missing = set(names) - await asyncio.to_thread(registered_agents, ast)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(missing)} agents not registered: {sorted(missing)[:10]}")
        await asyncio.sleep(0.5)


# ----------------------------------------------------------------- one SIPp for the whole load


@dataclass
class SippRun:
    """The SIPp process placing the load and the files it writes."""

    proc: asyncio.subprocess.Process
    messages: Path
    errors: Path
    stats: Path


async def start_sipp(ast: PrivateAsterisk, load: Load, workdir: Path, sipp_timeout: float) -> SippRun:
    """-m calls, -l at once, -r per second: SIPp paces the calls itself, one scenario for all."""
    workdir.mkdir(parents=True, exist_ok=True)
    xml = workdir / "load.xml"
    xml.write_text(load.caller().scenario(), encoding="latin-1")
    messages, errors, stats = workdir / "load.messages", workdir / "load.errors", workdir / "load.stats.csv"
    with open(workdir / "sipp.stderr", "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{ast.sip_port}", "-sf", str(xml),
            "-m", str(load.calls), "-l", str(load.concurrent), "-r", f"{load.rate:g}", "-rp", "1000",
            "-i", CARRIER_IP, "-p", str(free_port(socket.SOCK_DGRAM, CARRIER_IP)),
            "-mi", CARRIER_IP, "-mp", str(free_port(socket.SOCK_DGRAM, CARRIER_IP)),
            "-s", SERVICE_NUMBER, "-nostdin",
            "-trace_msg", "-message_file", str(messages),
            "-trace_err", "-error_file", str(errors),
            "-trace_stat", "-stf", str(stats), "-fd", "2",
            "-timeout", f"{int(sipp_timeout)}s", "-timeout_error",
            "-recv_timeout", "30000",  # no reply in 30 s (answer, INFO, BYE): that call fails
            cwd=str(workdir), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=err, start_new_session=True)
    return SippRun(proc=proc, messages=messages, errors=errors, stats=stats)


def sipp_stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's ``-trace_stat`` CSV (cumulative counters end in ``(C)``)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def stat_int(stats: dict[str, str], name: str) -> int:
    with contextlib.suppress(ValueError):
        return int(stats.get(name, "0") or 0)
    return 0


async def watch_sipp(run: SippRun, load: Load, every: float = 5.0) -> int:
    """Progress lines from SIPp's own counters until it exits; returns its exit status."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(run.proc.wait(), every)
        s = sipp_stats(run.stats)
        say(f"{time.monotonic() - started:5.0f} s  calls placed {stat_int(s, 'TotalCallCreated')}"
            f"/{load.calls}, on the line {stat_int(s, 'CurrentCall')}, "
            f"ended ok {stat_int(s, 'SuccessfulCall(C)')}, failed {stat_int(s, 'FailedCall(C)')}")


# ----------------------------------------------------------------- SIPp's message trace, per call


@dataclass
class CallTrace:
    """One call as SIPp saw it on the wire."""

    invite_at: float | None = None
    ringing_at: float | None = None
    answered_at: float | None = None
    caller_bye_at: float | None = None
    service_byes: int = 0


_STAMP = re.compile(r"^-+ (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)")
_HEADER = re.compile(r"^(Call-ID|i|CSeq)\s*:\s*(.+)$", re.IGNORECASE)


def trace_blocks(text: str) -> Iterator[tuple[float, bool, str, str, str]]:
    """(time, sent, first line, Call-ID, CSeq) for each message of SIPp's ``-trace_msg`` file."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _STAMP.match(line)] + [len(lines)]
    for begin, end in zip(starts, starts[1:], strict=False):
        kind = lines[begin + 1] if begin + 1 < end else ""
        if "message sent" not in kind and "message received" not in kind:
            continue
        stamp = _STAMP.match(lines[begin])
        assert stamp is not None
        at = dt.datetime.strptime(re.sub(r"\s+", " ", stamp.group(1)), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        body = [line.strip() for line in lines[begin + 2:end] if line.strip()]
        headers = {m.group(1).lower(): m.group(2).strip() for m in map(_HEADER.match, body) if m}
        call_id = headers.get("call-id") or headers.get("i") or ""
        yield at, "sent" in kind, body[0] if body else "", call_id, headers.get("cseq", "")


def read_trace(path: Path) -> dict[str, CallTrace]:
    """Per Call-ID: when the INVITE left, when 180 and 200 (to the INVITE) came, who sent BYE."""
    calls: dict[str, CallTrace] = {}
    if not path.exists():
        return calls
    for at, sent, first, call_id, cseq in trace_blocks(path.read_text(errors="replace")):
        call = calls.setdefault(call_id, CallTrace())
        if sent and first.startswith("INVITE ") and call.invite_at is None:
            call.invite_at = at
        elif sent and first.startswith("BYE ") and call.caller_bye_at is None:
            call.caller_bye_at = at
        elif not sent and first.startswith("BYE "):
            call.service_byes += 1
        elif not sent and cseq.endswith("INVITE") and first.startswith("SIP/2.0 180"):
            call.ringing_at = call.ringing_at or at
        elif not sent and cseq.endswith("INVITE") and first.startswith("SIP/2.0 200"):
            call.answered_at = call.answered_at or at
    return calls


# ----------------------------------------------------------------- CPU and memory from /proc


def cpu_ms(pid: int) -> float:
    """utime+stime of the whole process (every thread) plus waited-for children, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def key_to_agent_seconds(lines: list[dict[str, Any]]) -> list[float]:
    """Per call, from the menu key to the agent's bridge, by liyi's own log: the wait a caller hears."""
    def stamp(record: dict[str, Any]) -> float:
        return dt.datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()

    chose = {r["call_id"]: stamp(r) for r in lines if r.get("event") == "call.menu-choice"}
    connected = {r["call_id"]: stamp(r) for r in lines if r.get("event") == "call.connected"}
    return [connected[c] - chose[c] for c in connected if c in chose]


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (as bench/concurrent_calls.py), NaN when there is nothing."""
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


# ----------------------------------------------------------------- the call log


async def read_call_log(db: Path) -> list[Any]:
    """Every call liyi logged, as summaries (agent, answered, who hung up first)."""
    from db import CallStore

    store = CallStore(f"sqlite+aiosqlite:///{db}")
    await store.start()
    try:
        return await store.list_calls(limit=1_000_000)
    finally:
        await store.close()


# ----------------------------------------------------------------- the run


@dataclass
class Samples:
    """What is read while the processes are alive (CPU before and after, peak memory)."""

    asterisk_cpu0: float = 0.0
    liyi_cpu0: float = 0.0
    asterisk_cpu1: float = 0.0
    liyi_cpu1: float = 0.0
    liyi_peak_rss_mib: float = float("nan")
    load_seconds: float = 0.0
    sipp_exit: int | None = None


@dataclass
class Rig:
    """Every process of the run, so one ``close`` ends them all whatever happened."""

    ast: PrivateAsterisk
    home: Path
    banks: list[AgentBank] = field(default_factory=list)
    liyi: LiyiProcess | None = None
    sipp: SippRun | None = None

    async def close(self) -> None:
        if self.sipp is not None:
            await stop_process(self.sipp.proc)
        if self.liyi is not None:
            await self.liyi.stop()
        for bank in self.banks:
            await bank.stop()
        await asyncio.to_thread(self.ast.stop)


def liyi_config(rig: Rig, load: Load, db: Path) -> dict[str, Any]:
    """The shipped config with every agent in 咨询 (menu key 1); the other departments as shipped."""
    agents = [{"name": n, "endpoint": f"PJSIP/{n}"} for n in load.agent_names]
    departments = [{"name": "咨询", "number": "1", "agents": load.agent_names},
                   {"name": "报修", "number": "2", "agents": ["agent2"]},
                   {"name": "投诉", "number": "3", "agents": ["agent1"]}]
    return rig_config(rig.ast, db, agents=agents, departments=departments)


async def set_up(rig: Rig, load: Load, db: Path) -> None:
    """Asterisk with the extra agents, the agents' phones registered, liyi connected and aware of them."""
    add_agent_endpoints(rig.ast, load.agent_names)
    widen_rtp(rig.ast)
    say(f"starting Asterisk ({rig.ast.prefix.name}) on 127.0.0.1:{rig.ast.sip_port}")
    await asyncio.to_thread(rig.ast.start)
    names = load.agent_names
    for i in range(0, len(names), ACCOUNTS_PER_BARESIP):
        bank = AgentBank(names[i:i + ACCOUNTS_PER_BARESIP], rig.ast, rig.home / f"baresip-{i // ACCOUNTS_PER_BARESIP}")
        rig.banks.append(bank)
        await bank.start()
    await wait_registered(rig.ast, names, timeout=60)
    say(f"{len(names)} agents registered in {len(rig.banks)} baresip processes; starting liyi run")
    rig.liyi = LiyiProcess(liyi_config(rig, load, db), rig.home)
    await rig.liyi.start()
    for name in names:  # AMI must have told the controller about every phone before calls come
        await rig.liyi.wait_log(lambda r, n=name: r.get("event") == "agent.phone"
                                and r.get("agent") == n and r.get("registered"), 30)


async def wait_channels_gone(ast: PrivateAsterisk, timeout: float = 20.0) -> str:
    """After the last BYE: until Asterisk holds no channel (agents' legs included), or the timeout."""
    deadline = time.monotonic() + timeout
    left = ""
    while time.monotonic() < deadline:
        left = (await asyncio.to_thread(ast.rx, "core show channels concise")).strip()
        if not left:
            return ""
        await asyncio.sleep(0.5)
    return left


async def run_load(rig: Rig, load: Load, budget: float) -> Samples:
    """Place the load with CPU sampled just before the first call and just after the last."""
    assert rig.ast.proc is not None and rig.liyi is not None and rig.liyi.proc is not None
    ast_pid, liyi_pid = rig.ast.proc.pid, rig.liyi.proc.pid
    samples = Samples(asterisk_cpu0=cpu_ms(ast_pid), liyi_cpu0=cpu_ms(liyi_pid))
    started = time.monotonic()
    say(f"placing {load.calls} calls, {load.concurrent} at once, {load.rate:g}/s, "
        f"each ~{MENU_KEY_AT + CONNECT_ALLOWANCE + load.talk_seconds + 0.7:.0f} s")
    rig.sipp = await start_sipp(rig.ast, load, rig.home / "sipp", budget)
    samples.sipp_exit = await watch_sipp(rig.sipp, load)
    samples.load_seconds = time.monotonic() - started
    left = await wait_channels_gone(rig.ast)
    if left:
        say(f"channels still up 20 s after SIPp ended:\n{left}")
    samples.asterisk_cpu1, samples.liyi_cpu1 = cpu_ms(ast_pid), cpu_ms(liyi_pid)
    samples.liyi_peak_rss_mib = peak_rss_mib(liyi_pid)
    say(f"SIPp exited with {samples.sipp_exit} after {samples.load_seconds:.0f} s")
    return samples


# ----------------------------------------------------------------- figures and the report


def failure_kinds(stats: dict[str, str]) -> dict[str, int]:
    """SIPp's own reasons for failed calls (FailedUnexpectedMessage, FailedMaxUDPRetrans, …), non-zero only."""
    return {k[:-3]: stat_int(stats, k) for k in stats
            if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and stat_int(stats, k)}


def figures(load: Load, samples: Samples, trace: dict[str, CallTrace], stats: dict[str, str],
            log: list[Any], liyi_lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the report prints, as one flat dict (also the JSON line)."""
    invited = [c for c in trace.values() if c.invite_at is not None]
    answer = [c.answered_at - c.invite_at for c in invited if c.answered_at and c.invite_at]
    ringing = [c.ringing_at - c.invite_at for c in invited if c.ringing_at and c.invite_at]
    length = [c.caller_bye_at - c.invite_at for c in invited if c.caller_bye_at and c.invite_at]
    to_agent = key_to_agent_seconds(liyi_lines)
    attempted = max(len(invited), stat_int(stats, "TotalCallCreated"))
    ast_ms = (samples.asterisk_cpu1 - samples.asterisk_cpu0) / max(1, attempted)
    liyi_ms = (samples.liyi_cpu1 - samples.liyi_cpu0) / max(1, attempted)
    return {
        "calls": load.calls, "concurrent": load.concurrent, "rate": load.rate,
        "talk_seconds": load.talk_seconds, "agents": load.agents,
        "attempted": attempted, "answered": len(answer),
        "connected_to_agent": sum(1 for c in log if c.agent),
        "logged": len(log),
        "caller_hung_up_first": sum(1 for c in log if c.first_hangup == "caller"),
        "sipp_successful": stat_int(stats, "SuccessfulCall(C)"),
        "sipp_failed": stat_int(stats, "FailedCall(C)"), "sipp_failures": failure_kinds(stats),
        "sipp_exit": samples.sipp_exit,
        "ringing_ms_p50": round(pct(ringing, 50) * 1000, 1),
        "answer_ms_p50": round(pct(answer, 50) * 1000, 1),
        "answer_ms_p99": round(pct(answer, 99) * 1000, 1),
        "answer_ms_max": round(max(answer, default=float("nan")) * 1000, 1),
        "key_to_agent_s_p50": round(pct(to_agent, 50), 2),
        "key_to_agent_s_max": round(max(to_agent, default=float("nan")), 2),
        "call_seconds_p50": round(pct(length, 50), 1),
        "asterisk_cpu_ms_per_call": round(ast_ms, 1),
        "controller_cpu_ms_per_call": round(liyi_ms, 1),
        "controller_to_asterisk_cpu_pct": round(100 * liyi_ms / ast_ms, 1) if ast_ms else None,
        "controller_peak_rss_mib": round(samples.liyi_peak_rss_mib, 1),
        "service_bye_to_caller": sum(c.service_byes for c in trace.values()),
        "load_seconds": round(samples.load_seconds, 1),
    }


def report(f: dict[str, Any]) -> None:
    """Plain labelled lines for people, then the same figures as one JSON line."""
    print(f"load                        {f['calls']} calls, {f['concurrent']} at once, {f['rate']:g} new/s, "
          f"{f['agents']} auto-answering agents; {f['load_seconds']:.0f} s from SIPp's start to its exit")
    print(f"calls attempted             {f['attempted']}")
    print(f"answered (200 OK)           {f['answered']}")
    print(f"connected to an agent       {f['connected_to_agent']}   (call log: {f['logged']} calls, "
          f"caller hung up first on {f['caller_hung_up_first']})")
    print(f"SIPp verdict                {f['sipp_successful']} successful, {f['sipp_failed']} failed "
          f"(exit status {f['sipp_exit']}){'  ' + str(f['sipp_failures']) if f['sipp_failures'] else ''}")
    print(f"INVITE → 180 Ringing  p50   {f['ringing_ms_p50']:8.1f} ms")
    print(f"INVITE → 200 OK  p50        {f['answer_ms_p50']:8.1f} ms")
    print(f"INVITE → 200 OK  p99/max    {f['answer_ms_p99']:8.1f} / {f['answer_ms_max']:.1f} ms")
    print(f"menu key → agent  p50/max   {f['key_to_agent_s_p50']:8.2f} / {f['key_to_agent_s_max']:.2f} s"
          "   (liyi's log; ring-wait is said first)")
    print(f"call length (INVITE → BYE)  {f['call_seconds_p50']:8.1f} s p50")
    print(f"Asterisk CPU per call       {f['asterisk_cpu_ms_per_call']:8.1f} ms")
    print(f"controller CPU per call     {f['controller_cpu_ms_per_call']:8.1f} ms   "
          f"({f['controller_to_asterisk_cpu_pct']} % of Asterisk's)")
    print(f"controller peak RSS         {f['controller_peak_rss_mib']:8.1f} MiB")
    print(f"BYE from the service        {f['service_bye_to_caller']}   (must be 0: the caller hangs up first, R9)")
    print(json.dumps({"bench": "real_asterisk", **f}, ensure_ascii=False))


async def bench(load: Load, home: Path) -> dict[str, Any]:
    """Set up, place the load, tear everything down, then read what each party recorded."""
    prefix = find_prefix()
    if prefix is None or tools_missing():
        raise SystemExit("needs a built Asterisk (bash .ci/asterisk) and sipp, baresip, sox: "
                         f"prefix={prefix}, missing={tools_missing()}")
    ast = PrivateAsterisk(prefix=prefix, home=home / "asterisk")
    ast.configure(ROOT / "recordings" / "liyi")  # the shipped prompts, whole: a realistic call
    rig = Rig(ast=ast, home=home)
    db = home / "calls.db"
    setup_budget = 120.0
    try:
        await asyncio.wait_for(set_up(rig, load, db), setup_budget)
        samples = await run_load(rig, load, budget=max(30.0, load.timeout - setup_budget))
    finally:
        say("stopping SIPp, liyi, the phones and Asterisk")
        await rig.close()
    assert rig.sipp is not None and rig.liyi is not None
    trace = await asyncio.to_thread(read_trace, rig.sipp.messages)
    return figures(load, samples, trace, sipp_stats(rig.sipp.stats), await read_call_log(db),
                   rig.liyi.lines)


def parse_args(argv: list[str] | None = None) -> tuple[Load, Path | None]:
    """The load from the flags, and where to keep the run's files (None: a temporary folder)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100, help="calls to place in all (default 100)")
    ap.add_argument("--concurrent", type=int, default=50, help="calls on the line at once at most (default 50)")
    ap.add_argument("--rate", type=float, default=5.0, help="new calls per second (default 5)")
    ap.add_argument("--talk-seconds", type=float, default=33.0,
                    help="talk with the agent before the caller hangs up (default 33: ~45 s a call)")
    ap.add_argument("--agents", type=int, default=None, help="auto-answering agents (default: --concurrent)")
    ap.add_argument("--timeout", type=float, default=600.0, help="the whole run's bound, s (default 600)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the run's files (logs, SIPp trace, call log) in this folder")
    args = ap.parse_args(argv)
    load = Load(calls=args.calls, concurrent=args.concurrent, rate=args.rate,
                talk_seconds=args.talk_seconds, agents=max(2, args.agents or args.concurrent),
                timeout=args.timeout)
    return load, args.keep


async def main_async(load: Load, keep: Path | None) -> dict[str, Any]:
    """The run under the --timeout bound; SIGTERM ends it as Ctrl-C does (with teardown)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.ExitStack() as stack:
        if keep is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liyi-bench-")))
        else:
            home = keep
            home.mkdir(parents=True, exist_ok=True)
        async with asyncio.timeout(load.timeout):
            return await bench(load, home)


def main(argv: list[str] | None = None) -> int:
    load, keep = parse_args(argv)
    try:
        f = asyncio.run(main_async(load, keep))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; every process was stopped")
        return 130
    except TimeoutError:
        say(f"gave up after --timeout {load.timeout:g} s; every process was stopped")
        return 2
    report(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
