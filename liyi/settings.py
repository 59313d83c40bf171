"""liyi's settings: one YAML file plus environment variables, validated once.

Secrets never sit in the file: the ARI password and AMI secret come only from
``LIYI_ARI_PASSWORD`` and ``LIYI_AMI_SECRET`` (a password written into the
file is reported as a problem, so it is noticed before it is committed).
Every problem is reported with its YAML line, all at once, so an admin fixes
a config in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from callflow.config import DEFAULT_APP_NAME, CallFlowConfig, ConfigProblem, parse_callflow
from callflow.flow_timing import slow_flow_warnings

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///liyi.db"
SECRET_KEYS = {"ari_password": "LIYI_ARI_PASSWORD", "ami_secret": "LIYI_AMI_SECRET",
               "ami_password": "LIYI_AMI_SECRET", "password": "the environment"}


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


#: Liveness defaults (the clients' own: ``ari_client.DEFAULT_HEARTBEAT_SECONDS``,
#: ``ami_client.DEFAULT_PING_SECONDS``; kept as literals so the CLI's light commands
#: need not import aiohttp or panoramisk). A silent Asterisk is noticed within about
#: 1.5 × the heartbeat (+1 s) on ARI and 2 × the ping on AMI: under 15 s both.
DEFAULT_ARI_HEARTBEAT_SECONDS = 6.0
DEFAULT_AMI_PING_SECONDS = 5.0
#: Longest liveness interval accepted: beyond it a dead Asterisk goes unnoticed too long.
MAX_LIVENESS_SECONDS = 60.0
#: Where cel_custom.conf's file lands on a source or Debian install (astlogdir /var/log/asterisk).
DEFAULT_FALLBACK_LOG = "/var/log/asterisk/cel-custom/liyi-fallback.csv"


@dataclass(frozen=True)
class AsteriskSettings:
    ari_url: str = "http://127.0.0.1:8088"
    ari_user: str = "liyi"
    ari_password: str = field(default="", repr=False)
    app: str = DEFAULT_APP_NAME
    ami_host: str | None = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "liyi"
    ami_secret: str = field(default="", repr=False)
    ari_heartbeat_seconds: float = DEFAULT_ARI_HEARTBEAT_SECONDS
    ami_ping_seconds: float = DEFAULT_AMI_PING_SECONDS
    # Asterisk's CEL file of the calls its dialplan fallback served (asterisk-conf/cel_custom.conf),
    # imported into the call log; None: not imported (Asterisk on another host, or switched off).
    fallback_log: str | None = None


@dataclass(frozen=True)
class Settings:
    callflow: CallFlowConfig
    asterisk: AsteriskSettings | None  # None: no Asterisk configured (demo uses the simulator)
    database_url: str = DEFAULT_DATABASE_URL
    journal_path: str | None = None
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    source: str = "(defaults)"


def _lines(node: yaml.Node, path: str = "", out: dict[str, int] | None = None,
           seen: set[int] | None = None) -> dict[str, int]:
    """Dotted path → line number, from the YAML node tree.

    A node reached again through an alias (``*name``) is not walked again: its
    lines are where it was written, and nested aliases (a "billion laughs"
    file) would otherwise take exponential time and memory.
    """
    out = {} if out is None else out
    seen = set() if seen is None else seen
    if id(node) in seen:
        return out
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else str(key.value)
            out[sub] = key.start_mark.line + 1
            _lines(value, sub, out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            out[sub] = item.start_mark.line + 1
            _lines(item, sub, out, seen)
    return out


def _duplicate_keys(node: yaml.Node, path: str = "", seen: set[int] | None = None) -> list[ConfigProblem]:
    """Keys written twice in one mapping: YAML silently keeps the last, so the admin's
    first one (a flow step copied and not renamed, say) would vanish without a word.
    Each node is looked at once, however many aliases point at it (see :func:`_lines`)."""
    found: list[ConfigProblem] = []
    seen = set() if seen is None else seen
    if id(node) in seen:
        return found
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue  # a complex key (``? [a, b]``): no dotted path to name it by
            sub = f"{path}.{key.value}" if path else str(key.value)
            if key.value in keys and key.tag != "tag:yaml.org,2002:merge":
                found.append(ConfigProblem(sub, "written twice in the same mapping — YAML "
                                           "would keep only the last one",
                                           key.start_mark.line + 1))
            keys.add(key.value)
            found += _duplicate_keys(value, sub, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{path}[{i}]", seen)
    return found


#: More values than any real config holds once its aliases are expanded (the shipped one: ~400).
MAX_EXPANDED_VALUES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias expanded, counted once per node.

    Why: a few nested aliases ("billion laughs") expand to billions of values
    that the checks and their messages would walk; such a file is refused first.
    """
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    sizes[id(node)] = min(size, MAX_EXPANDED_VALUES + 1)
    return sizes[id(node)]


def _with_line(problem: ConfigProblem, lines: dict[str, int]) -> ConfigProblem:
    if problem.line:
        return problem
    path = problem.path
    while path:
        if path in lines:
            return ConfigProblem(problem.path, problem.message, lines[path])
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            break
        path = path[:cut]
    return problem


def read_yaml(path: Path) -> tuple[Any, dict[str, int], list[ConfigProblem]]:
    """The file's data (None when it cannot be read at all), its lines by dotted path, and
    the problems found in reading it (keys written twice are reported with the data)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}, [ConfigProblem(str(path), "no such file")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, {}, [ConfigProblem(str(path), f"cannot read: {exc}")]
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
        if node is None:
            return (data if data is not None else {}), {}, []
        if _expanded_size(node, {}) > MAX_EXPANDED_VALUES:
            return None, {}, [ConfigProblem(str(path), f"aliases (*name) expand to more than "
                                            f"{MAX_EXPANDED_VALUES} values — not a config", 1)]
        return (data if data is not None else {}), _lines(node), _duplicate_keys(node)
    except RecursionError:
        # PyYAML composes recursively: thousands of nested ``[`` or mappings overflow the stack.
        return None, {}, [ConfigProblem(str(path), "not valid YAML: nested too deeply for a config")]
    except yaml.reader.ReaderError as exc:
        # A control character (NUL, ESC…) the YAML reader refuses: its message names only a
        # character position, so say the line an editor would show.
        line = text[:exc.position].count("\n") + 1
        return None, {}, [ConfigProblem(str(path), f"not valid YAML: unacceptable character "
                                        f"#x{exc.character:04x} ({exc.reason})", line)]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return None, {}, [ConfigProblem(str(path), f"not valid YAML: {getattr(exc, 'problem', exc)}", line)]


def _fallback_log(raw: Mapping[str, Any], ari_url: str, problems: list[ConfigProblem]) -> str | None:
    """``asterisk.fallback_log``: a path, ``null``/``""`` for none; by default Asterisk's own
    log dir (cel_custom.conf's file) when Asterisk runs on this host, else none."""
    if "fallback_log" not in raw:
        host = (urlsplit(ari_url).hostname or "").lower()
        return DEFAULT_FALLBACK_LOG if host in {"127.0.0.1", "localhost", "::1"} else None
    value = raw.get("fallback_log")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\0" in value:
        problems.append(ConfigProblem("asterisk.fallback_log",
                                      f"{value!r} — must be the path of Asterisk's CEL file"))
        return None
    return value


def parse_settings(data: Any, env: Mapping[str, str], *, known_prompts: set[str] | None = None,
                   source: str = "(defaults)") -> tuple[Settings | None, list[ConfigProblem]]:
    if not isinstance(data, Mapping):
        return None, [ConfigProblem("(top)", "the config must be a mapping of sections")]
    callflow, problems = parse_callflow(data, known_prompts=known_prompts)
    problems = list(problems)

    asterisk: AsteriskSettings | None = None
    raw_ast = data.get("asterisk")
    if raw_ast is not None and not isinstance(raw_ast, Mapping):
        problems.append(ConfigProblem("asterisk", "must be a mapping"))
    elif isinstance(raw_ast, Mapping):
        for key in raw_ast:
            if key in SECRET_KEYS:
                problems.append(ConfigProblem(
                    f"asterisk.{key}",
                    f"secrets do not belong in the file — set {SECRET_KEYS[key]} instead"))
        url = str(raw_ast.get("ari_url", "http://127.0.0.1:8088"))
        if not url.startswith(("http://", "https://")):
            problems.append(ConfigProblem("asterisk.ari_url", f"{url!r} — must start with http:// or https://"))
        port = raw_ast.get("ami_port", 5038)
        if not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(ConfigProblem("asterisk.ami_port", f"{port!r} — must be a port 1..65535"))
            port = 5038
        ami_host = raw_ast.get("ami_host", "127.0.0.1")
        liveness: dict[str, float] = {}
        for key, default in (("ari_heartbeat_seconds", DEFAULT_ARI_HEARTBEAT_SECONDS),
                             ("ami_ping_seconds", DEFAULT_AMI_PING_SECONDS)):
            value = raw_ast.get(key, default)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 < value <= MAX_LIVENESS_SECONDS):
                problems.append(ConfigProblem(
                    f"asterisk.{key}",
                    f"{value!r} — must be a number of seconds above 0, at most "
                    f"{MAX_LIVENESS_SECONDS:g}"))
                value = default
            liveness[key] = float(value)
        fallback_log = _fallback_log(raw_ast, env.get("LIYI_ARI_URL", url), problems)
        asterisk = AsteriskSettings(
            fallback_log=fallback_log,
            ari_url=env.get("LIYI_ARI_URL", url).rstrip("/"),
            ari_user=str(raw_ast.get("ari_user", "liyi")),
            ari_password=env.get("LIYI_ARI_PASSWORD", ""),
            app=str(raw_ast.get("app", DEFAULT_APP_NAME)),
            ami_host=str(ami_host) if ami_host else None,
            ami_port=port,
            ami_user=str(raw_ast.get("ami_user", "liyi")),
            ami_secret=env.get("LIYI_AMI_SECRET", ""),
            **liveness,
        )

    db = data.get("database") or {}
    if not isinstance(db, Mapping):
        problems.append(ConfigProblem("database", "must be a mapping"))
        db = {}
    url = env.get("LIYI_DATABASE_URL") or str(db.get("url", DEFAULT_DATABASE_URL))
    if "://" not in url:
        problems.append(ConfigProblem("database.url", f"{url!r} — must be a SQLAlchemy URL like {DEFAULT_DATABASE_URL}"))
    elif "@" in url.split("://", 1)[1].split("/", 1)[0] and ":" in url.split("://", 1)[1].split("@", 1)[0] \
            and "LIYI_DATABASE_URL" not in env:
        problems.append(ConfigProblem("database.url", "contains a password — set LIYI_DATABASE_URL instead"))

    web = data.get("web") or {}
    if not isinstance(web, Mapping):
        problems.append(ConfigProblem("web", "must be a mapping"))
        web = {}
    web_port = web.get("port", 8080)
    if not isinstance(web_port, int) or not 0 <= web_port <= 65535:
        problems.append(ConfigProblem("web.port", f"{web_port!r} — must be a port 0..65535"))
        web_port = 8080

    if problems or callflow is None:
        return None, problems
    return Settings(
        callflow=callflow, asterisk=asterisk, database_url=url,
        journal_path=str(db["journal"]) if db.get("journal") else None,
        web_host=str(web.get("host", "127.0.0.1")), web_port=web_port, source=source,
    ), []


def load_settings(path: Path | None, env: Mapping[str, str] | None = None, *,
                  known_prompts: set[str] | None = None) -> Settings:
    """The settings from ``path`` (or defaults) and the environment; raises ConfigError."""
    env = os.environ if env is None else env
    if path is None:
        data: Any = {"company": {"name": "礼仪客服中心"}}
        lines: dict[str, int] = {}
        read_problems: list[ConfigProblem] = []
    else:
        data, lines, read_problems = read_yaml(path)
        if data is None:
            raise ConfigError(read_problems)
    settings, problems = parse_settings(data, env, known_prompts=known_prompts,
                                        source=str(path) if path else "(defaults)")
    problems = read_problems + problems
    if problems or settings is None:
        located = [_with_line(p, lines) for p in problems]
        raise ConfigError(sorted(located, key=lambda p: p.line or 0))
    return settings


def check_file(path: Path, env: Mapping[str, str] | None = None, *,
               known_prompts: set[str] | None = None) -> list[ConfigProblem]:
    try:
        load_settings(path, env, known_prompts=known_prompts)
    except ConfigError as exc:
        return exc.problems
    return []


def flow_warnings(path: Path, callflow: CallFlowConfig,
                  prompt_seconds: Callable[[str], float]) -> list[ConfigProblem]:
    """What check-config warns about in a valid config, each with its line: flows where a
    caller who presses nothing waits too long for an agent (``callflow.flow_timing``).

    ``prompt_seconds`` gives each prompt's length (the CLI measures the recordings).
    """
    _, lines, _ = read_yaml(path)
    located = [_with_line(w, lines) for w in slow_flow_warnings(callflow, prompt_seconds)]
    return sorted(located, key=lambda p: p.line or 0)
