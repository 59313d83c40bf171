"""The Asterisk configuration a deployment installs (asterisk-conf/).

The dialplan is parsed (contexts → extensions → priorities) so the etiquette
promises it makes can be checked without running Asterisk.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "asterisk-conf"
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
        if not line:
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
                                      "pjsip.conf", "musiconhold.conf", "README.md"])
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

    @pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("*.conf")))
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
