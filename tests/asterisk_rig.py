"""A real Asterisk 22 on loopback, with real SIP phones, for the real-Asterisk tier.

Everything the simulator only imitates is real here: a private Asterisk built
from the upstream sources by ``.ci/asterisk`` and loaded with the project's
own ``asterisk-conf/`` (test credentials substituted, ports and folders moved
so that nothing on the machine clashes), the real ``liyi run`` in its own
process, SIPp callers speaking SIP from 127.0.0.2 (the "carrier" address) and
baresip softphones registering as the agents from 127.0.0.1.

What a test can read afterwards is what a user would notice: the SIP timings
SIPp saw (INVITE → 180 → 200, who sent BYE), the phones' call events, the
prompts and music Asterisk itself says it played (its ``full`` log) and the
call log liyi wrote.

Where the Asterisk comes from: ``ASTERISK_PREFIX`` (what ``bash .ci/asterisk``
prints), else a finished build in the ``.ci/asterisk`` cache. Without either
the tier is skipped with one line saying how to enable it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from liyi.ari_password import ari_password_hash

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "asterisk-conf"
CACHE = Path(os.environ.get("LIYI_ASTERISK_CACHE", "/var/cache/liyi-asterisk"))
ARI_PASSWORD = "ari-test-secret"
AMI_SECRET = "ami-test-secret"
AGENT_PASSWORD = "agent-test-secret"
CARRIER_IP = "127.0.0.2"  # SIPp callers send from here: the trunk's `identify` matches it
HOW_TO_ENABLE = ("real-Asterisk tier skipped: run `bash .ci/asterisk` (it builds the vendored sources) "
                 "or set ASTERISK_PREFIX to an Asterisk 20/22 install")


def find_prefix() -> Path | None:
    """The Asterisk install to test against, or None (the tier is skipped)."""
    given = os.environ.get("ASTERISK_PREFIX")
    if given:
        return Path(given) if (Path(given) / "sbin" / "asterisk").exists() else None
    built = sorted(CACHE.glob("asterisk-*/.built"), key=lambda p: p.stat().st_mtime)
    return built[-1].parent if built else None


def tools_missing() -> list[str]:
    return [tool for tool in ("sipp", "baresip", "sox") if shutil.which(tool) is None]


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _substitute(text: str, pairs: list[tuple[str, str]], name: str) -> str:
    """Each replacement must hit: a changed asterisk-conf/ must not silently escape the rig.

    Replacements are literal (a crypt hash's ``$`` and ``/`` are not regex syntax).
    """
    for pattern, repl in pairs:
        text, count = re.subn(pattern, lambda _m, r=repl: r, text, flags=re.MULTILINE)
        if count == 0:
            raise AssertionError(f"asterisk-conf/{name}: {pattern!r} not found")
    return text


# ----------------------------------------------------------------- Asterisk


@dataclass
class PrivateAsterisk:
    """One Asterisk in a temporary folder, on ports of its own."""

    prefix: Path
    home: Path
    sip_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    http_port: int = field(default_factory=free_port)
    ami_port: int = field(default_factory=free_port)
    rtp_start: int = field(default_factory=lambda: random.randrange(20000, 39000, 200))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def etc(self) -> Path:
        return self.home / "etc"

    @property
    def full_log(self) -> Path:
        return self.home / "log" / "full"

    @property
    def fallback_log(self) -> Path:
        """cel_custom.conf's file: the CEL lines of the calls the dialplan fallback served."""
        return self.home / "log" / "cel-custom" / "liyi-fallback.csv"

    @property
    def security_log(self) -> Path:
        """logger.conf's ``security`` file: what fail2ban reads."""
        return self.home / "log" / "security"

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def configure(self, prompts: Path) -> None:
        """Install asterisk-conf/ as a deployment would, moved onto this instance's ports.

        As the README's install steps do: ari.conf gets the crypt hash ``liyi asterisk
        ari-password`` makes, pjsip_secrets.conf is made from its sample with the test
        passwords, and logger.conf is the shipped one (its security log included) with
        the ``full`` log one verbose level deeper, where the tests read bridges from.
        """
        # log/cel-custom: made by Asterisk's installer; cel_custom.conf writes the fallback's calls there.
        for sub in ("etc", "run", "log", "log/cel-custom", "spool", "lib", "data/sounds"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        lib = self.prefix / "var" / "lib" / "asterisk"
        data = self.home / "data"
        for item in lib.iterdir():  # sounds/en, moh, documentation, rest-api, ...
            if item.name != "sounds":
                (data / item.name).symlink_to(item)
        (data / "sounds" / "en").symlink_to(lib / "sounds" / "en")
        (data / "sounds" / "liyi").symlink_to(prompts)
        edits: dict[str, list[tuple[str, str]]] = {
            "ari.conf": [(r"CHANGE_ME_ARI_PASSWORD", ari_password_hash(ARI_PASSWORD)),
                         (r"^password_format\s*=\s*crypt$", "password_format = crypt")],
            "manager.conf": [(r"CHANGE_ME_AMI_SECRET", AMI_SECRET),
                             (r"^port\s*=\s*5038", f"port = {self.ami_port}")],
            "http.conf": [(r"^bindport\s*=\s*8088", f"bindport = {self.http_port}")],
            "pjsip.conf": [(r"^bind\s*=\s*0\.0\.0\.0:5060", f"bind = 127.0.0.1:{self.sip_port}"),
                           (r"192\.0\.2\.10", CARRIER_IP),
                           (r"sip\.carrier\.example:5060", f"{CARRIER_IP}:5060"),
                           (r"^#include pjsip_secrets\.conf$", "#include pjsip_secrets.conf")],
            "pjsip_secrets.conf.sample": [(r"CHANGE_ME_AGENT1_PASSWORD", AGENT_PASSWORD),
                                          (r"CHANGE_ME_AGENT2_PASSWORD", AGENT_PASSWORD),
                                          (r"CHANGE_ME_TRUNK_USERNAME", "trunk"),
                                          (r"CHANGE_ME_TRUNK_PASSWORD", "trunk-test-secret")],
            "logger.conf": [(r"^full\s*=>.*$", "full => notice,warning,error,verbose(4),dtmf"),
                            (r"^security\s*=>\s*security$", "security => security")],
        }
        installed = {conf.name: conf.name for conf in CONF_DIR.glob("*.conf")}
        installed["pjsip_secrets.conf.sample"] = "pjsip_secrets.conf"
        for source, target in sorted(installed.items()):
            text = (CONF_DIR / source).read_text(encoding="utf-8")
            text = _substitute(text, edits.get(source, []), source)
            (self.etc / target).write_text(text, encoding="utf-8")
        # What a stock /etc/asterisk has and asterisk-conf/ leaves to the site: folders,
        # modules and RTP ports.
        h = self.home
        (self.etc / "asterisk.conf").write_text(
            "[directories]\n"
            f"astetcdir => {self.etc}\nastmoddir => {self.prefix}/lib/asterisk/modules\n"
            f"astvarlibdir => {h}/lib\nastdbdir => {h}/lib\nastkeydir => {h}/lib\n"
            f"astdatadir => {data}\nastagidir => {data}/agi-bin\nastspooldir => {h}/spool\n"
            f"astrundir => {h}/run\nastlogdir => {h}/log\nastsbindir => {self.prefix}/sbin\n"
            "[options]\nverbose = 3\ndebug = 0\nnocolor = yes\nhideconnect = yes\n"
            "transmit_silence = yes\n", encoding="utf-8")
        (self.etc / "modules.conf").write_text(
            "[modules]\nautoload = yes\n"
            # no config of theirs here; they only slow the start or bind ports we did not move
            "noload => res_pjsip_phoneprov.so\nnoload => res_phoneprov.so\n"
            "noload => chan_iax2.so\nnoload => chan_unistim.so\nnoload => chan_mgcp.so\n"
            "noload => chan_skinny.so\nnoload => res_hep.so\nnoload => res_hep_pjsip.so\n"
            "noload => res_hep_rtcp.so\nnoload => cdr_radius.so\nnoload => cel_radius.so\n"
            "noload => res_config_ldap.so\nnoload => res_snmp.so\nnoload => res_statsd.so\n"
            "noload => res_xmpp.so\nnoload => chan_dahdi.so\nnoload => res_smdi.so\n"
            "noload => pbx_dundi.so\nnoload => res_calendar.so\nnoload => chan_console.so\n"
            "noload => chan_audiosocket.so\nnoload => res_stun_monitor.so\n",
            encoding="utf-8")
        (self.etc / "rtp.conf").write_text(
            f"[general]\nrtpstart = {self.rtp_start}\nrtpend = {self.rtp_start + 199}\n",
            encoding="utf-8")

    def start(self, timeout: float = 60.0) -> None:
        out = open(self.home / "log" / "console.out", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [str(self.prefix / "sbin" / "asterisk"), "-C", str(self.etc / "asterisk.conf"),
             "-f", "-q", "-n"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.proc.returncode}: "
                                   + (self.home / "log" / "console.out").read_text()[-2000:])
            done = subprocess.run(self._rx_args("core waitfullybooted"), capture_output=True,
                                  timeout=timeout)
            if done.returncode == 0 and b"fully booted" in done.stdout.lower():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("asterisk did not finish booting")
            time.sleep(0.2)

    def _rx_args(self, command: str) -> list[str]:
        return [str(self.prefix / "sbin" / "asterisk"), "-C", str(self.etc / "asterisk.conf"),
                "-rx", command]

    def rx(self, command: str) -> str:
        done = subprocess.run(self._rx_args(command), capture_output=True, timeout=20)
        return done.stdout.decode(errors="replace")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.full_log.read_text(encoding="utf-8", errors="replace") if self.full_log.exists() else ""

    def played(self, channel_prefix: str = "") -> list[str]:
        """Sounds Asterisk says it played (``<chan> Playing 'liyi/x.slin'``), in order."""
        out = []
        for line in self.log_text().splitlines():
            m = re.search(r"<([^>]+)> Playing '([^']+)'", line)
            if m and m.group(1).startswith(channel_prefix):
                out.append(re.sub(r"\.(slin|wav|gsm|ulaw|alaw)\d*$", "", m.group(2)))
        return out

    def music_started(self, channel_prefix: str = "") -> int:
        """How many times music on hold started on matching channels (Asterisk's own log)."""
        return sum(1 for line in self.log_text().splitlines()
                   if "Started music on hold" in line and channel_prefix in line)


def make_test_prompts(src: Path, dest: Path, seconds: float = 1.2) -> Path:
    """The product's prompts cut short, so a call of the tier lasts seconds, not a minute."""
    dest.mkdir(parents=True, exist_ok=True)
    for wav in sorted(src.glob("*.wav")):
        target = dest / wav.name
        if not target.exists():
            subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-b", "16", str(target),
                            "trim", "0", str(seconds)], check=True, capture_output=True)
    return dest


# ----------------------------------------------------------------- SIPp callers


@dataclass(frozen=True)
class CallerPlan:
    """What one SIPp caller does: when to press keys, when to hang up (or cancel)."""

    number: str = "13800138000"
    keys: tuple[tuple[float, str], ...] = ()  # (seconds after the 200 OK, digit), sent as SIP INFO
    hang_up_after: float | None = 8.0          # seconds after the 200 OK; None: cancel instead
    cancel_after_ringing: float = 0.5          # when hang_up_after is None: CANCEL after the 180
    wait_for_bye_seconds: float = 0.0          # >0: the caller stays silent and expects a BYE

    def scenario(self) -> str:
        head = (
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n"
            "<scenario name=\"liyi caller\">\n"
            "<send retrans=\"500\"><![CDATA[\n"
            "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            f"From: \"caller\" <sip:{self.number}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n"
            "To: <sip:[service]@[remote_ip]:[remote_port]>\n"
            "Call-ID: [call_id]\nCSeq: 1 INVITE\n"
            f"Contact: sip:{self.number}@[local_ip]:[local_port]\n"
            "Max-Forwards: 70\nContent-Type: application/sdp\nContent-Length: [len]\n\n"
            "v=0\no=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]\ns=-\n"
            "c=IN IP[media_ip_type] [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 8 0 101\n"
            "a=rtpmap:8 PCMA/8000\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
            "a=fmtp:101 0-15\n]]></send>\n"
            "<recv response=\"100\" optional=\"true\"/>\n"
        )
        if self.hang_up_after is None:
            ms = int(self.cancel_after_ringing * 1000)
            body = (
                "<recv response=\"180\"/>\n"
                f"<pause milliseconds=\"{ms}\"/>\n"
                "<send><![CDATA[\n"
                "CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
                "[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n"
                "CSeq: 1 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
                "<recv response=\"200\"/>\n<recv response=\"487\"/>\n"
                + self._ack("1") + "</scenario>\n")
            return head + body
        body = (
            "<recv response=\"180\" optional=\"true\"/>\n"
            "<recv response=\"183\" optional=\"true\"/>\n"
            "<recv response=\"200\" rrs=\"true\"/>\n"
            + self._ack("1")
        )
        at = 0.0
        cseq = 2
        for when, digit in self.keys:
            if when > at:
                body += f"<pause milliseconds=\"{int((when - at) * 1000)}\"/>\n"
                at = when
            body += (
                "<send><![CDATA[\n"
                "INFO [next_url] SIP/2.0\n"
                "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
                "[last_From:]\n[last_To:]\n[last_Call-ID:]\n"
                f"CSeq: {cseq} INFO\nContact: sip:{self.number}@[local_ip]:[local_port]\n"
                "Max-Forwards: 70\nContent-Type: application/dtmf-relay\nContent-Length: [len]\n\n"
                f"Signal={digit}\nDuration=160\n]]></send>\n"
                "<recv response=\"200\"/>\n")
            cseq += 1
        if self.wait_for_bye_seconds > 0:
            body += (
                f"<recv request=\"BYE\" timeout=\"{int(self.wait_for_bye_seconds * 1000)}\"/>\n"
                "<send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n"
                "[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n")
        else:
            assert self.hang_up_after is not None
            if self.hang_up_after > at:
                body += f"<pause milliseconds=\"{int((self.hang_up_after - at) * 1000)}\"/>\n"
            body += (
                "<send retrans=\"500\"><![CDATA[\n"
                "BYE [next_url] SIP/2.0\n"
                "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
                "[last_From:]\n[last_To:]\n[last_Call-ID:]\n"
                f"CSeq: {cseq} BYE\nContact: sip:{self.number}@[local_ip]:[local_port]\n"
                "Max-Forwards: 70\nContent-Length: 0\n\n]]></send>\n"
                "<recv response=\"200\"/>\n")
        return head + body + "</scenario>\n"

    @staticmethod
    def _ack(cseq: str) -> str:
        return (
            "<send><![CDATA[\n"
            "ACK [next_url] SIP/2.0\n"
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            "[last_From:]\n[last_To:]\n[last_Call-ID:]\n"
            f"CSeq: {cseq} ACK\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n")


@dataclass
class SipMessage:
    at: float  # wall clock (epoch seconds)
    sent: bool
    first_line: str


@dataclass
class CallerResult:
    """What one SIPp caller saw: its exit status and the SIP messages, timed."""

    returncode: int
    messages: list[SipMessage]
    errors: str

    @property
    def ok(self) -> bool:
        """SIPp's own verdict: the scenario ran as written (no unexpected BYE from the service)."""
        return self.returncode == 0

    def first(self, sent: bool, prefix: str) -> SipMessage | None:
        return next((m for m in self.messages if m.sent == sent and m.first_line.startswith(prefix)), None)

    @property
    def invite_at(self) -> float:
        m = self.first(True, "INVITE")
        assert m is not None, "no INVITE sent"
        return m.at

    def response_at(self, code: str) -> float | None:
        m = next((m for m in self.messages
                  if not m.sent and m.first_line.startswith(f"SIP/2.0 {code}")
                  and "INVITE" in m.first_line + ""), None)
        if m is None:
            m = self.first(False, f"SIP/2.0 {code}")
        return m.at if m else None

    @property
    def service_sent_bye(self) -> bool:
        return self.first(False, "BYE") is not None

    @property
    def caller_sent_bye(self) -> bool:
        return self.first(True, "BYE") is not None


_STAMP = re.compile(r"^-+ (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)")


def parse_sipp_messages(text: str) -> list[SipMessage]:
    """SIPp's ``-trace_msg`` file: a dashed line with the time, "UDP message sent/received", the message."""
    out: list[SipMessage] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _STAMP.match(line)
        if not m or i + 2 >= len(lines):
            continue
        kind = lines[i + 1]
        if "message sent" not in kind and "message received" not in kind:
            continue
        j = i + 2
        while j < len(lines) and not lines[j].strip():
            j += 1
        stamp = dt.datetime.strptime(m.group(1).replace("  ", " "), "%Y-%m-%d %H:%M:%S.%f")
        out.append(SipMessage(at=stamp.timestamp(), sent="sent" in kind,
                              first_line=lines[j].strip() if j < len(lines) else ""))
    return out


async def run_caller(ast: PrivateAsterisk, plan: CallerPlan, workdir: Path, *,
                     name: str = "caller", service: str = "4008001234",
                     timeout: float = 120.0) -> CallerResult:
    """One SIPp call from the carrier address into the trunk; returns when SIPp exits."""
    workdir.mkdir(parents=True, exist_ok=True)
    xml = workdir / f"{name}.xml"
    xml.write_text(plan.scenario(), encoding="latin-1")
    msg_file = workdir / f"{name}.messages"
    err_file = workdir / f"{name}.errors"
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{ast.sip_port}", "-sf", str(xml), "-m", "1", "-l", "1",
        "-i", CARRIER_IP, "-p", str(free_port(socket.SOCK_DGRAM, CARRIER_IP)),
        "-mi", CARRIER_IP, "-mp", str(free_port(socket.SOCK_DGRAM, CARRIER_IP)),
        "-s", service, "-nostdin", "-trace_msg", "-message_file", str(msg_file),
        "-trace_err", "-error_file", str(err_file), "-timeout", f"{int(timeout)}s",
        "-timeout_error", "-recv_timeout", f"{int(timeout * 1000)}",
        cwd=str(workdir), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), timeout + 15)
    messages = parse_sipp_messages(msg_file.read_text(errors="replace")) if msg_file.exists() else []
    errors = (err_file.read_text(errors="replace") if err_file.exists() else "") + err.decode(errors="replace")
    return CallerResult(returncode=proc.returncode or 0, messages=messages, errors=errors)


STRANGER_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="stranger">
<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{from_user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:{from_user}@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8
a=rtpmap:8 PCMA/8000
]]></send>
<recv response="100" optional="true"/>
<recv response="401" optional="true" next="refused"/>
<recv response="403" optional="true" next="refused"/>
<recv response="404" next="refused"/>
<label id="refused"/>
<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
</scenario>
"""


async def run_stranger(ast: PrivateAsterisk, workdir: Path, *, from_user: str, source_ip: str,
                       timeout: float = 20.0) -> CallerResult:
    """One INVITE from an address that is not the carrier's, naming ``from_user``.

    The scenario passes only if Asterisk refuses it (401, 403 or 404); a 180 or 200 —
    the call let in — makes SIPp fail.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    xml = workdir / "stranger.xml"
    xml.write_text(STRANGER_SCENARIO.replace("{from_user}", from_user), encoding="latin-1")
    msg_file = workdir / "stranger.messages"
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{ast.sip_port}", "-sf", str(xml), "-m", "1", "-l", "1",
        "-i", source_ip, "-p", str(free_port(socket.SOCK_DGRAM, source_ip)),
        "-mi", source_ip, "-mp", str(free_port(socket.SOCK_DGRAM, source_ip)),
        "-s", "4008001234", "-nostdin", "-trace_msg", "-message_file", str(msg_file),
        "-timeout", f"{int(timeout)}s", "-timeout_error", "-recv_timeout", f"{int(timeout * 1000)}",
        cwd=str(workdir), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), timeout + 15)
    messages = parse_sipp_messages(msg_file.read_text(errors="replace")) if msg_file.exists() else []
    return CallerResult(returncode=proc.returncode or 0, messages=messages,
                        errors=err.decode(errors="replace"))


# ----------------------------------------------------------------- baresip agents


@dataclass
class PhoneEvent:
    at: float
    type: str
    data: dict[str, Any]


class Softphone:
    """A baresip agent phone, registered to the private Asterisk, driven over ctrl_tcp."""

    def __init__(self, name: str, ast: PrivateAsterisk, home: Path, *, auto_answer: bool) -> None:
        self.name = name
        self.ast = ast
        self.home = home / f"baresip-{name}"
        self.auto_answer = auto_answer
        self.ctrl_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.events: list[PhoneEvent] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._token = 0
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def start(self, timeout: float = 20.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        mods = "/usr/lib/baresip/modules"
        (self.home / "config").write_text(
            f"poll_method epoll\nsip_listen 127.0.0.1:{self.sip_port}\n"
            f"module_path {mods}\nmodule g711.so\nmodule ausine.so\nmodule aufile.so\n"
            "module_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n"
            "audio_source ausine,440\naudio_player aufile,/dev/null\naudio_alert aufile,/dev/null\n"
            "ausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\nauplay_channels 1\n"
            "rtp_ports 40000-49999\n", encoding="utf-8")
        answer = "auto" if self.auto_answer else "manual"
        (self.home / "accounts").write_text(
            f"<sip:{self.name}@127.0.0.1:{self.ast.sip_port};transport=udp>"
            f";auth_pass={AGENT_PASSWORD};regint=600;answermode={answer};audio_codecs=PCMA,PCMU\n",
            encoding="utf-8")
        self.proc = await asyncio.create_subprocess_exec(
            "baresip", "-f", str(self.home), stdin=asyncio.subprocess.DEVNULL,
            stdout=open(self.home / "baresip.log", "wb"),  # noqa: SIM115
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"baresip {self.name}: no ctrl_tcp") from None
                await asyncio.sleep(0.1)
        self._pump = asyncio.get_running_loop().create_task(self._read())
        # It registers at once, often before ctrl_tcp is up: ask Asterisk, not the phone.
        while f"{self.name}/sip:" not in await asyncio.to_thread(self.ast.rx, "pjsip show contacts"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"baresip {self.name}: not registered")
            await asyncio.sleep(0.1)

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                length = await self._reader.readuntil(b":")
                payload = await self._reader.readexactly(int(length[:-1]) + 1)
                msg = json.loads(payload[:-1].decode("utf-8", errors="replace"))
                if msg.get("response") and msg.get("token") in self._replies:
                    self._replies.pop(msg["token"]).set_result(msg)
                elif msg.get("event"):
                    self.events.append(PhoneEvent(time.time(), str(msg.get("type")), msg))
                    self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return

    async def command(self, command: str, params: str = "") -> dict[str, Any]:
        assert self._writer is not None
        self._token += 1
        token = str(self._token)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[token] = fut
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        return await asyncio.wait_for(fut, 10)

    def count(self, kind: str) -> int:
        return sum(1 for ev in self.events if ev.type == kind)

    async def wait_for(self, kind: str, timeout: float, *, count: int = 1) -> PhoneEvent:
        deadline = time.monotonic() + timeout
        while True:
            matching = [ev for ev in self.events if ev.type == kind]
            if len(matching) >= count:
                return matching[count - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {kind} (#{count}) within {timeout} s; "
                                     f"saw {[ev.type for ev in self.events]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def accept(self) -> None:
        await self.command("accept")

    async def hangup(self) -> None:
        await self.command("hangup")

    async def send_keys(self, digits: str, gap: float = 0.3) -> None:
        for digit in digits:
            await self.command("sndcode", digit)
            await asyncio.sleep(gap)

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


# ----------------------------------------------------------------- liyi run


def rig_config(ast: PrivateAsterisk, db: Path, **overrides: Any) -> dict[str, Any]:
    """The shipped liyi.yaml pointed at the private Asterisk, with short timers for the tier."""
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "liyi.yaml").read_text(encoding="utf-8"))
    cfg["asterisk"].update(ari_url=ast.ari_url, ami_port=ast.ami_port,
                           fallback_log=str(ast.fallback_log))
    cfg["database"] = {"url": f"sqlite+aiosqlite:///{db}", "journal": str(db) + ".journal"}
    cfg["web"] = {"host": "127.0.0.1", "port": 0}
    # Open all day, every day, so the test does not depend on when it runs.
    cfg["hours"]["open"] = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                             "from": "00:00", "to": "24:00"}]
    cfg["calendar"] = {"holidays": [], "workdays": []}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            cfg.setdefault(section, {})[name] = value
        else:
            cfg[section] = value
    return cfg


class LiyiProcess:
    """``liyi run --config`` as an operator starts it, its JSON log lines collected."""

    def __init__(self, config: dict[str, Any], home: Path) -> None:
        self.config = config
        self.home = home
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        path = self.home / "liyi-test.yaml"
        path.write_text(yaml.safe_dump(self.config, allow_unicode=True), encoding="utf-8")
        env = {**os.environ, "LIYI_ARI_PASSWORD": ARI_PASSWORD, "LIYI_AMI_SECRET": AMI_SECRET}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "liyi.cli", "run", "--config", str(path),
            cwd=str(ROOT), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self._pump = asyncio.get_running_loop().create_task(self._read())
        # "reconnected" when it starts with calls to take back (a restart mid-call)
        await self.wait_log(lambda r: r.get("event") in ("ari.connected", "ari.reconnected"), timeout)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with open(self.home / "liyi.log", "ab") as raw:
            async for line in self.proc.stderr:
                raw.write(line)
                raw.flush()
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        self.lines.append(record)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.lines if r.get("event") == name]

    async def wait_log(self, predicate: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = next((r for r in self.lines if predicate(r)), None)
            if found is not None:
                return found
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"liyi run exited {self.proc.returncode}: "
                                     + (self.home / "liyi.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError("liyi run: timed out waiting for a log line")
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._pump, 5)
        return self.proc.returncode or 0


# ----------------------------------------------------------------- Asterisk's own log, read back


@dataclass(frozen=True)
class LogLine:
    at: float
    kind: str      # played | moh-start | moh-stop | joined | left | dtmf
    channel: str
    detail: str = ""


_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]")
_LOG_KINDS = (
    ("played", re.compile(r"<([^>]+)> Playing '([^']+)'")),
    ("moh-start", re.compile(r"Started music on hold, class '[^']*', on channel '([^']+)'()")),
    ("moh-stop", re.compile(r"Stopped music on hold on (\S+)()")),
    ("joined", re.compile(r"Channel (\S+) joined '([^']+)' stasis-bridge <([^>]+)>")),
    ("left", re.compile(r"Channel (\S+) left '([^']+)' stasis-bridge <([^>]+)>")),
)


def read_log(text: str) -> list[LogLine]:
    """The lines of Asterisk's `full` log that say what a caller heard and where they were."""
    out: list[LogLine] = []
    for line in text.splitlines():
        t = _LOG_TIME.match(line)
        if not t:
            continue
        at = dt.datetime.strptime(t.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        for kind, pattern in _LOG_KINDS:
            m = pattern.search(line)
            if m:
                detail = m.group(2)
                if kind in ("joined", "left"):
                    detail = f"{m.group(3)}|{m.group(2)}"
                elif kind == "played":
                    detail = re.sub(r"\.(slin|wav|gsm|ulaw|alaw)\d*$", "", detail)
                out.append(LogLine(at, kind, m.group(1), detail))
                break
    return out


def caller_alone_spans(lines: list[LogLine], caller: str, *, end: float) -> list[tuple[float, float]]:
    """When ``caller`` sat in a mixing bridge with nobody else and no music: silence (R4, R6).

    Built from Asterisk's own bridge and music lines, so it is what the caller got, whatever
    the controller believed.
    """
    members: dict[str, set[str]] = {}
    music = False
    where: str | None = None
    spans: list[tuple[float, float]] = []
    alone_since: float | None = None

    def alone() -> bool:
        if where is None or music:
            return False
        bridge_id, _, tech = where.partition("|")
        return "holding" not in tech and members.get(bridge_id, set()) == {caller}

    for line in lines:
        if line.kind in ("joined", "left"):
            bridge_id = line.detail.split("|", 1)[0]
            group = members.setdefault(bridge_id, set())
            if line.kind == "joined":
                group.add(line.channel)
                if line.channel == caller:
                    where = line.detail
            else:
                group.discard(line.channel)
                if line.channel == caller:
                    where = None
        elif line.channel == caller and line.kind == "moh-start":
            music = True
        elif line.channel == caller and line.kind == "moh-stop":
            music = False
        now_alone = alone()
        if now_alone and alone_since is None:
            alone_since = line.at
        elif not now_alone and alone_since is not None:
            spans.append((alone_since, line.at))
            alone_since = None
    if alone_since is not None:
        spans.append((alone_since, end))
    return spans
