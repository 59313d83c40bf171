"""The Asterisk configuration a deployment installs (asterisk-conf/).

The dialplan is parsed (contexts → extensions → priorities) so the etiquette
promises it makes can be checked without running Asterisk. The other files are
parsed too and linted for the hardening issue 9 asks for: ARI and AMI on
loopback with least-privilege accounts, a crypt-hashed ARI password, AMI login
limits, no way into PJSIP but the carrier's address or an agent's password,
passwords kept out of the repository, a security log and a fail2ban jail on it.
"""

from __future__ import annotations

import configparser
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "asterisk-conf"
SECRETS_SAMPLE = CONF / "pjsip_secrets.conf.sample"
JAIL = CONF / "fail2ban" / "jail.d" / "asterisk-liyi.conf"
AMI_CLIENT = REPO / "ari_handlers" / "ami_client.py"
ASTLOGDIR = "/var/log/asterisk"  # where a source build and Debian's package write logs
RECORDINGS = REPO / "recordings"
CALLER_ENTRY_CONTEXT = "from-trunk"
SECRET_KEYS = {"password", "secret", "md5_cred"}
PLACEHOLDER = "CHANGE_ME"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
IDLE_RELEASE_MIN_SECONDS = 600  # R9: default idle time before an open line may be released
THREE_RINGS_SECONDS = 11.0  # China cadence: 1+4+1+4+1


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Priority:
    """One dialplan step: ``same => n(label),App(args)``."""

    label: str | None
    app: str
    args: str
    line: int


@dataclass(frozen=True)
class Section:
    name: str
    templates: tuple[str, ...]
    is_template: bool
    options: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        values = [v for k, v in self.options if k == key]
        return values[-1] if values else None


def strip_comment(line: str) -> str:
    return re.sub(r"(?<!\\);.*", "", line).strip()


def parse_conf(path: Path) -> list[Section]:
    """Asterisk's config syntax: ``[name](template,…)`` or ``[name](!)``, then ``key = value``."""
    sections: list[Section] = []
    name: str | None = None
    templates: tuple[str, ...] = ()
    is_template = False
    options: list[tuple[str, str]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = strip_comment(raw)
        if not line or line.startswith("#"):  # #include and friends: see directives()
            continue
        header = re.fullmatch(r"\[([^\]]+)\](?:\(([^)]*)\))?", line)
        if header:
            if name is not None:
                sections.append(Section(name, templates, is_template, tuple(options)))
            marks = [m.strip() for m in (header.group(2) or "").split(",") if m.strip()]
            name, options = header.group(1), []
            is_template = "!" in marks
            templates = tuple(m for m in marks if m != "!")
            continue
        parts = re.split(r"\s*=>?\s*", line, maxsplit=1)
        assert len(parts) == 2, f"{path.name}: cannot parse {raw!r}"
        options.append((parts[0].strip().lower(), parts[1].strip()))
    if name is not None:
        sections.append(Section(name, templates, is_template, tuple(options)))
    return sections


def directives(path: Path) -> list[tuple[str, str]]:
    """The file's ``#include``/``#tryinclude``/``#exec`` lines as (directive, argument)."""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"#(\w+)\s+\"?([^\"]+?)\"?", strip_comment(raw))
        if m:
            out.append((m.group(1).lower(), m.group(2)))
    return out


def resolved(sections: list[Section], section: Section) -> dict[str, str]:
    """A section's options with its templates' options underneath (pjsip.conf inheritance)."""
    merged: dict[str, str] = {}
    for tpl_name in section.templates:
        tpl = next(s for s in sections if s.name == tpl_name and s.is_template)
        merged.update(resolved(sections, tpl))
    merged.update(dict(section.options))
    return merged


def parse_dialplan(path: Path) -> dict[str, dict[str, list[Priority]]]:
    """contexts → extension → priorities in order (``1``/``n``/``n(label)``, ``exten``/``same``)."""
    plan: dict[str, dict[str, list[Priority]]] = {}
    context, exten = None, None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = strip_comment(raw)
        if not line:
            continue
        header = re.fullmatch(r"\[([^\]]+)\]", line)
        if header:
            context, exten = header.group(1), None
            plan[context] = {}
            continue
        m = re.fullmatch(r"(exten|same)\s*=>\s*(.*)", line)
        if not m or context in (None, "general", "globals"):
            continue
        body = m.group(2)
        if m.group(1) == "exten":
            exten, body = (part.strip() for part in body.split(",", 1))
        assert exten is not None, f"line {number}: `same` before any `exten`"
        prio, call = (part.strip() for part in body.split(",", 1))
        label = re.fullmatch(r"[\dn]+(?:\((\w+)\))?", prio)
        assert label, f"line {number}: bad priority {prio!r}"
        app = re.fullmatch(r"(\w+)(?:\((.*)\))?", call)
        assert app, f"line {number}: bad application call {call!r}"
        plan[context].setdefault(exten, []).append(
            Priority(label.group(1), app.group(1), app.group(2) or "", number))
    return plan


def globals_of(path: Path) -> dict[str, str]:
    section = next(s for s in parse_conf(path) if s.name == "globals")
    return {k.upper(): v for k, v in section.options}


def goto_contexts(priority: Priority) -> set[str]:
    """Contexts a Goto/GotoIf/Gosub names explicitly (``context,exten,prio``)."""
    if priority.app.lower() not in {"goto", "gotoif", "gosub", "gosubif"}:
        return set()
    targets = priority.args.split("?", 1)[-1].split(":")
    return {t.split(",")[0].strip() for t in targets if t.count(",") == 2}


def caller_contexts(plan: dict[str, dict[str, list[Priority]]]) -> set[str]:
    """Every context an inbound caller can reach from from-trunk."""
    seen, todo = set(), [CALLER_ENTRY_CONTEXT]
    while todo:
        ctx = todo.pop()
        if ctx in seen:
            continue
        seen.add(ctx)
        for prios in plan[ctx].values():
            for p in prios:
                todo.extend(goto_contexts(p) - seen)
    return seen


@pytest.fixture(scope="module")
def plan() -> dict[str, dict[str, list[Priority]]]:
    return parse_dialplan(CONF / "extensions.conf")


@pytest.fixture(scope="module")
def dial_globals() -> dict[str, str]:
    return globals_of(CONF / "extensions.conf")


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1).upper(), m.group(0)), value)


# --------------------------------------------------------------------------- tests


class TestFilesPresent:
    @pytest.mark.parametrize("name", ["http.conf", "ari.conf", "manager.conf", "extensions.conf",
                                      "pjsip.conf", "musiconhold.conf", "logger.conf",
                                      "pjsip_secrets.conf.sample", "README.md"])
    def test_file_exists_and_is_commented(self, name: str) -> None:
        """Each config file ships, and each .conf opens with an explanatory comment."""
        text = (CONF / name).read_text(encoding="utf-8")
        if name.endswith(".conf"):
            assert text.startswith(";"), f"{name} must start with a comment saying what it is for"
            comments = [ln for ln in text.splitlines() if ln.strip().startswith(";")]
            assert len(comments) >= 5


class TestDialplanPrompts:
    def test_every_played_sound_is_a_recording(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """Every Playback/Background sound exists as recordings/<name>.wav (so install ships it)."""
        sounds = [
            (p.line, name.strip())
            for exts in plan.values() for prios in exts.values() for p in prios
            if p.app.lower() in {"playback", "background"}
            for name in p.args.split(",")[0].split("&")
        ]
        assert sounds, "the dialplan plays prompts"
        missing = [(line, s) for line, s in sounds if not (RECORDINGS / f"{s}.wav").is_file()]
        assert missing == []

    def test_fallback_prompts_are_liyi_prompts(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """The caller-facing dialplan plays only our own liyi/ prompts, which are installed with liyi."""
        from liyi.prompts import PROMPT_NAMES

        for ctx in caller_contexts(plan):
            for prios in plan[ctx].values():
                for p in prios:
                    if p.app.lower() == "playback":
                        for name in p.args.split(",")[0].split("&"):
                            assert name.startswith("liyi/") and name[5:] in PROMPT_NAMES


class TestStasis:
    def test_inbound_calls_enter_the_liyi_app(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """from-trunk sends callers to Stasis(<DEFAULT_APP_NAME>,inbound), the app the controller registers."""
        config = importlib.import_module("callflow.config")  # lazily: written by the lead
        stasis = [p for prios in plan[CALLER_ENTRY_CONTEXT].values() for p in prios
                  if p.app.lower() == "stasis"]
        assert len(stasis) == 1
        app, *args = [a.strip() for a in stasis[0].args.split(",")]
        assert app == config.DEFAULT_APP_NAME
        assert args == ["inbound"]

    def test_every_trunk_extension_reaches_stasis(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """Each inbound extension either calls Stasis or goes straight to the one that does."""
        exts = plan[CALLER_ENTRY_CONTEXT]
        with_stasis = {e for e, prios in exts.items() if any(p.app == "Stasis" for p in prios)}
        for exten, prios in exts.items():
            if exten not in with_stasis:
                assert prios[0].app == "Goto"
                assert prios[0].args.split(",")[0] in with_stasis

    def test_after_stasis_the_caller_goes_to_the_fallback(
        self, plan: dict[str, dict[str, list[Priority]]]
    ) -> None:
        """When Stasis returns (FAILED: controller down, trace 07 C) the next step leads to the fallback."""
        for prios in plan[CALLER_ENTRY_CONTEXT].values():
            apps = [p.app for p in prios]
            if "Stasis" in apps:
                after = prios[apps.index("Stasis") + 1:]
                assert [p.app for p in after if p.app not in ("NoOp", "Verbose", "Log")] == ["Goto"]
                assert goto_contexts(after[-1]) == {"liyi-fallback"}


class TestNeverHangUpOnACaller:
    """R9, checked on every context a caller can reach from from-trunk.

    The rule: a ``Hangup`` may appear only as the end of an idle release —
    right after an ``EndWhile`` that closes a ``While`` loop whose body
    ``Wait``s and whose condition keeps looping while a counter is below a
    ``[globals]`` limit of at least 600 s; only NoOp/Verbose/Log/Set may
    stand between ``EndWhile`` and ``Hangup``, and no label inside that span
    lets a Goto jump past the loop. Also, no extension simply runs off its
    end (Asterisk would then hang up): each ends in ``Goto`` or such a
    ``Hangup``.
    """

    def test_fallback_is_reachable(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """The fallback context is among the caller-facing contexts this rule covers."""
        assert {"from-trunk", "liyi-fallback"} <= caller_contexts(plan)

    def test_hangup_only_after_long_idle_wait(
        self, plan: dict[str, dict[str, list[Priority]]], dial_globals: dict[str, str]
    ) -> None:
        """Every Hangup a caller can reach follows a Wait loop of at least 10 minutes."""
        hangups = 0
        for ctx in caller_contexts(plan):
            for exten, prios in plan[ctx].items():
                for i, p in enumerate(prios):
                    if p.app.lower() != "hangup":
                        continue
                    hangups += 1
                    where = f"{ctx},{exten} line {p.line}"
                    j = i - 1
                    while j >= 0 and prios[j].app in ("NoOp", "Verbose", "Log", "Set"):
                        j -= 1
                    assert j >= 0 and prios[j].app == "EndWhile", f"{where}: Hangup not after an idle loop"
                    start = max(k for k in range(j) if prios[k].app == "While")
                    body = prios[start + 1:j]
                    assert any(b.app == "Wait" for b in body), f"{where}: idle loop does not Wait"
                    assert all(q.label is None for q in prios[start + 1:i + 1]), \
                        f"{where}: a label lets a Goto skip the idle loop"
                    condition = prios[start].args
                    assert "<" in condition, f"{where}: loop must run while the idle time is below a limit"
                    limits = [int(dial_globals[v]) for v in re.findall(r"\$\{(\w+)\}", condition)
                              if v in dial_globals and dial_globals[v].isdigit()]
                    assert limits and max(limits) >= IDLE_RELEASE_MIN_SECONDS, \
                        f"{where}: idle limit must be a [globals] value ≥ {IDLE_RELEASE_MIN_SECONDS} s"
        assert hangups <= 1  # the idle release, and nothing else

    def test_no_extension_runs_off_its_end(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """Each caller-facing extension ends in a Goto or the idle-release Hangup, never by falling off."""
        for ctx in caller_contexts(plan):
            for exten, prios in plan[ctx].items():
                assert prios[-1].app in ("Goto", "Hangup"), f"{ctx},{exten} ends in {prios[-1].app}"

    def test_unanswered_agents_lead_back_to_ringing(
        self, plan: dict[str, dict[str, list[Priority]]]
    ) -> None:
        """After Dial, a caller nobody answered hears an apology and the agents are rung again."""
        prios = plan["liyi-fallback"]["s"]
        dial = next(i for i, p in enumerate(prios) if p.app == "Dial")
        assert prios[dial].label, "Dial needs a label to loop back to"
        branch = prios[dial + 1:]
        goto_back = next(i for i, p in enumerate(branch) if p.app == "Goto")
        assert branch[goto_back].args == prios[dial].label
        before = branch[:goto_back]
        assert any(p.app == "Playback" and "fallback-busy" in p.args for p in before)
        assert any(p.app == "MusicOnHold" for p in before), "music, not silence, between attempts"


class TestFallbackEtiquette:
    def test_answers_within_three_rings(
        self, plan: dict[str, dict[str, list[Priority]]], dial_globals: dict[str, str]
    ) -> None:
        """R1: the fallback sends ringing, then answers before ring 3 ends (after at least ring 1's tone)."""
        prios = plan["liyi-fallback"]["s"]
        apps = [p.app for p in prios]
        ring, answer = apps.index("Ringing"), apps.index("Answer")
        assert ring < answer
        waited = sum(float(expand(p.args, dial_globals)) for p in prios[ring:answer] if p.app == "Wait")
        assert 1.0 <= waited < THREE_RINGS_SECONDS

    def test_greets_before_ringing_agents(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """R2: the apology prompt plays after answering and before the agents are rung."""
        apps = [(p.app, p.args) for p in plan["liyi-fallback"]["s"]]
        answer = [a for a, _ in apps].index("Answer")
        dial = [a for a, _ in apps].index("Dial")
        assert ("Playback", "liyi/fallback-apology") in apps[answer:dial]

    def test_dial_rings_agents_with_music_and_survives_agent_hangup(
        self, plan: dict[str, dict[str, list[Priority]]], dial_globals: dict[str, str]
    ) -> None:
        """Dial rings the agent list for three rings with music (m) and continues when the agent hangs up (g)."""
        dial = next(p for p in plan["liyi-fallback"]["s"] if p.app == "Dial")
        devices, timeout, options = (expand(a, dial_globals) for a in dial.args.split(",", 2))
        assert devices.split("&") == ["PJSIP/agent1", "PJSIP/agent2"]
        assert 0 < float(timeout) <= THREE_RINGS_SECONDS + 1
        assert re.search(r"m(\(|$)", options) and "g" in re.sub(r"\([^)]*\)", "", options)

    def test_agent_hangup_plays_closing_prompt(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """R8/R9: after the agent hangs up first (DIALSTATUS ANSWER) the caller hears closing-thanks."""
        prios = plan["liyi-fallback"]["s"]
        branch = next(p for p in prios if p.app == "GotoIf" and "ANSWER" in p.args)
        target = branch.args.split("?", 1)[1].split(":")[0]
        closing = next(p for p in prios if p.label == target)
        assert (closing.app, closing.args) == ("Playback", "liyi/closing-thanks")

    def test_agents_in_fallback_exist_in_pjsip(self, dial_globals: dict[str, str]) -> None:
        """Every device the fallback rings is an endpoint defined in pjsip.conf."""
        sections = parse_conf(CONF / "pjsip.conf")
        endpoints = {s.name for s in sections if not s.is_template
                     and resolved(sections, s).get("type") == "endpoint"}
        for device in dial_globals["LIYI_AGENTS"].split("&"):
            tech, name = device.split("/", 1)
            assert tech == "PJSIP" and name in endpoints


class TestLoopbackOnly:
    def test_http_binds_to_loopback(self) -> None:
        """ARI's HTTP server listens on 127.0.0.1:8088 only."""
        general = next(s for s in parse_conf(CONF / "http.conf") if s.name == "general")
        assert general.get("enabled") == "yes"
        assert general.get("bindaddr") in LOOPBACK
        assert general.get("bindport") == "8088"
        assert general.get("tlsbindaddr") in (None, *LOOPBACK)

    def test_manager_binds_to_loopback(self) -> None:
        """AMI listens on loopback only, and the liyi user may log in from loopback only."""
        sections = parse_conf(CONF / "manager.conf")
        general = next(s for s in sections if s.name == "general")
        assert general.get("bindaddr") in LOOPBACK
        assert general.get("webenabled") in (None, "no")
        user = next(s for s in sections if s.name == "liyi")
        assert ("deny", "0.0.0.0/0.0.0.0") in user.options
        permits = [v for k, v in user.options if k == "permit"]
        assert permits and all(p.split("/")[0] in LOOPBACK for p in permits)


class TestAccounts:
    def test_ari_user(self) -> None:
        """ARI user liyi exists with read-write access (it answers, plays and bridges)."""
        sections = parse_conf(CONF / "ari.conf")
        assert next(s for s in sections if s.name == "general").get("enabled") == "yes"
        user = next(s for s in sections if s.name == "liyi")
        assert user.get("type") == "user" and user.get("read_only") == "no"

    def test_manager_user_has_least_privilege(self) -> None:
        """AMI user liyi reads system+call events only and cannot hang up, redirect, originate or run commands."""
        user = next(s for s in parse_conf(CONF / "manager.conf") if s.name == "liyi")
        read = set((user.get("read") or "").split(","))
        write = set((user.get("write") or "").split(","))
        assert read == {"system", "call"}  # PeerStatus/ContactStatus/FullyBooted; DeviceStateChange
        assert write <= {"system", "reporting"}
        assert not write & {"call", "originate", "command", "config", "all"}

    @pytest.mark.parametrize("name", sorted([p.name for p in CONF.glob("*.conf")] + [SECRETS_SAMPLE.name]))
    def test_no_real_secrets(self, name: str) -> None:
        """Every password/secret in the shipped config is a CHANGE_ME placeholder, never a real value."""
        for section in parse_conf(CONF / name):
            for key, value in section.options:
                if key in SECRET_KEYS:
                    assert value.startswith(PLACEHOLDER), f"{name} [{section.name}] {key} = {value!r}"

    def test_readme_names_the_environment_variables(self) -> None:
        """The README tells admins which env vars carry the ARI password and AMI secret."""
        text = (CONF / "README.md").read_text(encoding="utf-8")
        assert "LIYI_ARI_PASSWORD" in text and "LIYI_AMI_SECRET" in text
        assert "liyi prompts install /var/lib/asterisk/sounds" in text


@pytest.fixture(scope="module")
def endpoints() -> dict[str, dict[str, str]]:
    """pjsip.conf endpoints with their templates applied."""
    sections = parse_conf(CONF / "pjsip.conf")
    return {s.name: resolved(sections, s) for s in sections
            if not s.is_template and resolved(sections, s).get("type") == "endpoint"}


class TestPjsip:
    def test_trunk_lands_in_from_trunk_in_mandarin(self, endpoints: dict[str, dict[str, str]]) -> None:
        """The carrier endpoint sends calls to from-trunk with channel language zh."""
        trunks = {n: e for n, e in endpoints.items() if e.get("context") == CALLER_ENTRY_CONTEXT}
        assert trunks
        for ep in trunks.values():
            assert ep.get("language") == "zh"
            assert ep.get("direct_media") == "no"

    @pytest.mark.parametrize("agent", ["agent1", "agent2"])
    def test_agent_softphones(self, endpoints: dict[str, dict[str, str]], agent: str) -> None:
        """Agents use context agents, language zh, direct_media no, and authenticate."""
        ep = endpoints[agent]
        assert (ep.get("context"), ep.get("language"), ep.get("direct_media")) == ("agents", "zh", "no")
        assert ep.get("auth") and ep.get("aors")

    def test_agents_context_exists(self, plan: dict[str, dict[str, list[Priority]]]) -> None:
        """Every context an endpoint names exists in the dialplan."""
        sections = parse_conf(CONF / "pjsip.conf")
        contexts = {resolved(sections, s).get("context") for s in sections if not s.is_template}
        assert contexts - {None} <= set(plan)

    def test_music_on_hold_default_class(self) -> None:
        """Class default plays files, so waiting callers hear music (R4, R5)."""
        default = next(s for s in parse_conf(CONF / "musiconhold.conf") if s.name == "default")
        assert default.get("mode") == "files" and default.get("directory")


# --------------------------------------------------------------------------- hardening (issue 9)

#: AMI classes as Asterisk 22.10.1 registers them (events: ast_manager_event_blob_create's
#: class; actions: ast_manager_register_xml's). An action runs when the account's write
#: classes share any one with the action's; an empty set needs no class.
AMI_EVENT_CLASS = {
    "DeviceStateChange": "call",     # main/devicestate.c
    "PeerStatus": "system",          # main/stasis_endpoints.c
    "ContactStatus": "system",       # main/stasis_endpoints.c
    "FullyBooted": "system",         # main/manager.c
    "Shutdown": "system",            # main/manager.c
}
#: Events the controller reads that panoramisk itself listens for, so they are not among
#: ami_client.py's register_event calls: FullyBooted (Manager.__init__ registers
#: send_awaiting_actions, which ours overrides) and Shutdown (AMIProtocol.handle_message
#: ends the connection; ours logs "Asterisk shut down").
PANORAMISK_EVENTS = {"FullyBooted", "Shutdown"}
AMI_ACTION_CLASSES: dict[str, set[str]] = {
    "PJSIPShowContacts": {"system"},               # res/res_pjsip/pjsip_options.c
    "PJSIPShowEndpoints": {"system"},              # res/res_pjsip/pjsip_configuration.c
    "PJSIPShowEndpoint": {"system"},
    "DeviceStateList": {"call", "reporting"},      # res/res_manager_devicestate.c
    "Ping": set(), "Login": set(), "Logoff": set(), "Events": set(), "Challenge": set(),
}
#: Write classes that would let the controller's account act on calls or the system beyond
#: reading status: never granted, whatever the controller needs.
AMI_DANGEROUS_WRITE = {"call", "originate", "command", "config", "agent", "user", "all"}
#: The identifiers that need proof (a source address, or a name then a password).
SAFE_IDENTIFIERS = {"ip", "username"}


def ami_usage() -> tuple[set[str], set[str]]:
    """The AMI events the controller subscribes to and the actions it sends (from its source)."""
    source = AMI_CLIENT.read_text(encoding="utf-8")
    events = set(re.findall(r"register_event\(\s*[\"'](\w+)[\"']", source))
    actions = set(re.findall(r"[\"']Action[\"']\s*:\s*[\"'](\w+)[\"']", source))
    return events, actions | {"Login", "Ping"}  # panoramisk logs in and pings by itself


def option(path: Path, section: str, key: str) -> str | None:
    return next((s.get(key) for s in parse_conf(path) if s.name == section), None)


@pytest.fixture(scope="module")
def pjsip_sections() -> list[Section]:
    """pjsip.conf with the sample secrets file where its #include stands (as Asterisk reads it)."""
    return parse_conf(CONF / "pjsip.conf") + parse_conf(SECRETS_SAMPLE)


def carrier_addresses() -> list[str]:
    """The source addresses pjsip.conf's identify sections accept as the carrier."""
    sections = parse_conf(CONF / "pjsip.conf")
    return [v.split("/")[0] for s in sections if s.get("type") == "identify"
            for k, v in s.options if k == "match"]


class TestAriHardening:
    def test_password_is_a_crypt_hash_placeholder(self) -> None:
        """ari.conf stores the ARI password as a crypt hash (password_format = crypt), a placeholder until installed."""
        user = next(s for s in parse_conf(CONF / "ari.conf") if s.name == "liyi")
        assert user.get("password_format") == "crypt", \
            "ari.conf [liyi]: password_format must be crypt, so the file never holds the password itself"
        assert (user.get("password") or "").startswith(PLACEHOLDER)

    def test_install_steps_make_the_hash_with_liyi(self) -> None:
        """The README's install steps put `liyi asterisk ari-password`'s hash into ari.conf."""
        text = (CONF / "README.md").read_text(encoding="utf-8")
        made = re.search(r"(\w+)=\"\$\(liyi asterisk ari-password\)\"", text)
        assert made and re.search(rf"sed -i \S*CHANGE_ME_ARI_PASSWORD\|\$\{{{made.group(1)}\}}", text), \
            "README.md: the install must replace CHANGE_ME_ARI_PASSWORD with `liyi asterisk ari-password`'s output"

    def test_http_server_keeps_its_version_to_itself(self) -> None:
        """http.conf sends no Server header naming the Asterisk version (servername blank)."""
        assert option(CONF / "http.conf", "general", "servername") == "", \
            "http.conf [general]: set `servername =` (blank) so ARI does not advertise Asterisk's version"

    def test_ari_is_not_reachable_over_tls_on_another_address(self) -> None:
        """No HTTPS listener is opened beside the loopback HTTP one."""
        general = next(s for s in parse_conf(CONF / "http.conf") if s.name == "general")
        assert general.get("tlsenable") in (None, "no"), "http.conf: TLS would listen on tlsbindaddr; keep ARI on loopback"


class TestAmiHardening:
    def test_login_limits(self) -> None:
        """AMI drops a connection that does not log in within 30 s and allows few such connections at once."""
        general = next(s for s in parse_conf(CONF / "manager.conf") if s.name == "general")
        timeout, limit = general.get("authtimeout"), general.get("authlimit")
        assert timeout is not None and timeout.isdigit() and 0 < int(timeout) <= 30, \
            f"manager.conf [general]: authtimeout must be set, 1..30 s (is {timeout!r})"
        assert limit is not None and limit.isdigit() and 0 < int(limit) <= 10, \
            f"manager.conf [general]: authlimit must be set, 1..10 pending logins (is {limit!r}; default 50)"

    def test_read_classes_are_exactly_what_the_controller_listens_to(self) -> None:
        """The AMI account reads exactly the classes of the events ami_client.py subscribes to."""
        events, _ = ami_usage()
        unknown = events - AMI_EVENT_CLASS.keys()
        assert not unknown, f"ami_client.py listens to {sorted(unknown)}: add its class to AMI_EVENT_CLASS"
        needed = {AMI_EVENT_CLASS[e] for e in events}
        user = next(s for s in parse_conf(CONF / "manager.conf") if s.name == "liyi")
        granted = set((user.get("read") or "").split(","))
        assert granted == needed, \
            f"manager.conf [liyi] read = {','.join(sorted(granted))}; the controller needs {','.join(sorted(needed))}"

    def test_write_classes_cover_every_action_and_nothing_more(self) -> None:
        """Every action ami_client.py sends is allowed, every write class is used, and none can act on calls."""
        _, actions = ami_usage()
        unknown = actions - AMI_ACTION_CLASSES.keys()
        assert not unknown, f"ami_client.py sends {sorted(unknown)}: add its class to AMI_ACTION_CLASSES"
        user = next(s for s in parse_conf(CONF / "manager.conf") if s.name == "liyi")
        granted = {c for c in (user.get("write") or "").split(",") if c}
        assert not granted & AMI_DANGEROUS_WRITE, \
            f"manager.conf [liyi] write grants {sorted(granted & AMI_DANGEROUS_WRITE)}: it could act on calls or config"
        for action in sorted(actions):
            classes = AMI_ACTION_CLASSES[action]
            assert not classes or classes & granted, f"manager.conf [liyi] write: {action} needs one of {sorted(classes)}"
        for cls in sorted(granted):
            assert any(cls in AMI_ACTION_CLASSES[a] for a in actions), \
                f"manager.conf [liyi] write = …{cls}…: no action of the controller needs it"


def raw_options(path: Path, section: str) -> list[tuple[str, str]]:
    """A section's ``key = value`` lines with the key's case kept (parse_conf lower-cases keys;
    an eventfilter's name() is matched case-sensitively)."""
    out: list[tuple[str, str]] = []
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = strip_comment(raw)
        header = re.fullmatch(r"\[([^\]]+)\](?:\([^)]*\))?", line)
        if header:
            current = header.group(1)
        elif line and current == section and "=" in line:
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


#: Asterisk 22's advanced event filter that lets one event through by its exact name.
INCLUDE_BY_NAME = re.compile(r"eventfilter\(action\(include\),name\((\w+)\)\)")


class TestAmiEventFilter:
    """Issue 10: Asterisk sends the controller's AMI account only the events it reads."""

    def test_every_event_the_controller_reads_is_let_through_and_nothing_else(self) -> None:
        """manager.conf [liyi] has one include-by-name filter per event ami_client.py (or panoramisk
        for it) handles, and no other filter: no legacy regex, no exclude, no extra event."""
        events, _ = ami_usage()
        needed = events | PANORAMISK_EVENTS
        filters = [(k, v) for k, v in raw_options(CONF / "manager.conf", "liyi")
                   if k.lower().startswith("eventfilter")]
        odd = [f"{k} = {v}" for k, v in filters if not INCLUDE_BY_NAME.fullmatch(k) or v]
        assert not odd, f"manager.conf [liyi]: only `eventfilter(action(include),name(X)) =` lines, not {odd}"
        let_through = [m.group(1) for k, _ in filters if (m := INCLUDE_BY_NAME.fullmatch(k))]
        assert len(let_through) == len(set(let_through)), f"manager.conf [liyi]: an event filtered twice: {let_through}"
        assert set(let_through) == needed, (
            f"manager.conf [liyi] lets through {sorted(set(let_through) - needed)} that nothing reads, "
            f"and holds back {sorted(needed - set(let_through))} that the controller reads")

    def test_every_event_let_through_is_in_a_read_class(self) -> None:
        """A filtered-in event still needs its class in `read`, or Asterisk never sends it."""
        granted = set((option(CONF / "manager.conf", "liyi", "read") or "").split(","))
        for key, _ in raw_options(CONF / "manager.conf", "liyi"):
            m = INCLUDE_BY_NAME.fullmatch(key)
            if m:
                assert AMI_EVENT_CLASS[m.group(1)] in granted, f"{m.group(1)} needs read = …{AMI_EVENT_CLASS[m.group(1)]}…"


class TestSipIdentification:
    def test_no_anonymous_endpoint(self, pjsip_sections: list[Section]) -> None:
        """No PJSIP object is named anonymous (the endpoint Asterisk hands unknown callers to)."""
        assert [s.name for s in pjsip_sections if s.name.lower() == "anonymous"] == [], \
            "pjsip: an `anonymous` section would take calls from anyone"

    def test_identifier_order_needs_proof(self, pjsip_sections: list[Section]) -> None:
        """[global] identifies requests only by source address or by name (then password)."""
        globals_ = [s for s in pjsip_sections if s.get("type") == "global"]
        assert len(globals_) == 1, "pjsip.conf: one [global] type = global section"
        order = globals_[0].get("endpoint_identifier_order")
        assert order, "pjsip.conf [global]: set endpoint_identifier_order (the default includes anonymous)"
        methods = {m.strip() for m in order.split(",")}
        assert methods <= SAFE_IDENTIFIERS, \
            f"pjsip.conf [global] endpoint_identifier_order: {sorted(methods - SAFE_IDENTIFIERS)} not allowed"
        assert globals_[0].get("allow_unauthenticated_options") in (None, "no"), \
            "pjsip.conf [global]: allow_unauthenticated_options lets anyone probe endpoints"

    def test_every_endpoint_needs_an_address_or_a_password(self, pjsip_sections: list[Section]) -> None:
        """An endpoint without a password is matched by source address only; one matched by name has a password."""
        endpoints = {s.name: resolved(pjsip_sections, s) for s in pjsip_sections
                     if not s.is_template and resolved(pjsip_sections, s).get("type") == "endpoint"}
        identified = {s.get("endpoint") for s in pjsip_sections if s.get("type") == "identify"}
        auths = {s.name for s in pjsip_sections if s.get("type") == "auth"}
        for name, ep in endpoints.items():
            methods = {m.strip() for m in (ep.get("identify_by") or "").split(",") if m.strip()}
            assert methods, f"pjsip.conf [{name}]: set identify_by (the default matches by name too)"
            if not ep.get("auth"):
                assert methods == {"ip"}, \
                    f"pjsip.conf [{name}] has no password: identify_by must be ip alone, not {sorted(methods)}"
                assert name in identified, f"pjsip.conf [{name}]: identify_by = ip needs an identify section"
            else:
                assert ep["auth"] in auths, f"pjsip [{name}] auth = {ep['auth']}: no such auth section"

    def test_trunk_is_matched_by_address_alone(self, endpoints: dict[str, dict[str, str]]) -> None:
        """Endpoints landing in from-trunk are identified only by the carrier's source address."""
        trunks = {n: e for n, e in endpoints.items() if e.get("context") == CALLER_ENTRY_CONTEXT}
        for name, ep in trunks.items():
            assert ep.get("identify_by") == "ip", \
                f"pjsip.conf [{name}]: a stranger could reach from-trunk by writing `From: {name}@…`"


class TestSecretsKeptOut:
    def test_pjsip_conf_holds_no_password_and_includes_the_secrets_file(self) -> None:
        """pjsip.conf has no password at all and #includes pjsip_secrets.conf, which must exist to load."""
        sections = parse_conf(CONF / "pjsip.conf")
        keys = [(s.name, k) for s in sections for k, _ in s.options if k in SECRET_KEYS]
        assert keys == [], f"pjsip.conf holds secrets {keys}: move them to pjsip_secrets.conf"
        assert ("include", "pjsip_secrets.conf") in directives(CONF / "pjsip.conf"), \
            "pjsip.conf: `#include pjsip_secrets.conf` (not tryinclude: a missing file must be loud)"

    def test_sample_has_every_auth_the_endpoints_use(self) -> None:
        """The sample defines each auth pjsip.conf names, every password a CHANGE_ME placeholder."""
        sections = parse_conf(CONF / "pjsip.conf")
        wanted = {resolved(sections, s).get(k) for s in sections if not s.is_template
                  for k in ("auth", "outbound_auth")} - {None}
        sample = {s.name: s for s in parse_conf(SECRETS_SAMPLE)}
        for name in sorted(wanted):
            assert name in sample and sample[name].get("type") == "auth", \
                f"pjsip_secrets.conf.sample: no [{name}] type = auth"
            assert (sample[name].get("password") or "").startswith(PLACEHOLDER)

    def test_the_filled_in_file_is_never_committed(self) -> None:
        """git ignores asterisk-conf/pjsip_secrets.conf, and the README says how to make it."""
        ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
        assert "asterisk-conf/pjsip_secrets.conf" in ignored, ".gitignore: add asterisk-conf/pjsip_secrets.conf"
        text = (CONF / "README.md").read_text(encoding="utf-8")
        assert "pjsip_secrets.conf.sample" in text and "/etc/asterisk/pjsip_secrets.conf" in text, \
            "README.md: tell how to make /etc/asterisk/pjsip_secrets.conf from the sample"


class TestSecurityLog:
    def test_security_events_have_their_own_file(self) -> None:
        """logger.conf writes Asterisk's security events to the file `security`, with ISO timestamps."""
        logfiles = next(s for s in parse_conf(CONF / "logger.conf") if s.name == "logfiles")
        files = {k: {lvl.strip() for lvl in v.split(",")} for k, v in logfiles.options}
        assert "security" in files.get("security", set()), "logger.conf [logfiles]: add `security => security`"
        assert (option(CONF / "logger.conf", "general", "dateformat") or "").startswith("%F %T"), \
            "logger.conf [general]: dateformat = %F %T… so fail2ban and people read the time alike"

    def test_deployment_logs_kept(self) -> None:
        """messages (problems) and full (each call step by step, keys included) are still written."""
        logfiles = next(s for s in parse_conf(CONF / "logger.conf") if s.name == "logfiles")
        files = {k: v for k, v in logfiles.options}
        assert {"notice", "warning", "error"} <= set(files.get("messages", "").split(","))
        full = files.get("full", "")
        assert "dtmf" in full and re.search(r"\bverbose\b", full), "logger.conf: keep the `full` call log"


@pytest.fixture(scope="module")
def jail() -> configparser.SectionProxy:
    """The sample fail2ban jail, read as fail2ban reads it (INI)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.read(JAIL, encoding="utf-8")
    assert parser.sections() == ["asterisk"], \
        "the jail extends fail2ban's own [asterisk] jail, which bans on TCP and UDP"
    return parser["asterisk"]


class TestFail2ban:

    def test_jail_reads_the_security_log_with_the_stock_filter(self, jail: configparser.SectionProxy) -> None:
        """The sample jail is on, uses fail2ban's `asterisk` filter and reads logger.conf's security file."""
        assert jail.get("enabled") == "true"
        assert jail.get("filter", "asterisk") == "asterisk"
        assert jail.get("logpath") == f"{ASTLOGDIR}/security", \
            f"{JAIL.name}: logpath must be {ASTLOGDIR}/security (logger.conf's security file)"
        assert set(jail.get("port", "").split(",")) >= {"5060"}
        assert int(jail.get("maxretry", "0")) >= 3, "leave an agent room for a typo or two"

    def test_the_carrier_and_the_host_are_never_banned(self, jail: configparser.SectionProxy) -> None:
        """ignoreip holds loopback and every carrier address, so a ban cannot turn callers away."""
        ignore = set(jail.get("ignoreip", "").split())
        assert "127.0.0.1/8" in ignore
        for address in carrier_addresses():
            assert address in ignore, f"{JAIL.name}: add the carrier's {address} to ignoreip"
