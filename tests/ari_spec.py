"""The ARI API description as a checker, read from ``tests/spec/ari-digest.json``.

Both sides of our ARI traffic are checked against it: the simulator may only
serve routes, parameters and event shapes the real Asterisk documents, and the
client may only make requests the real Asterisk accepts. The digest is made
from the upstream description (``../shared/asterisk-spec/ari/``, Asterisk
22.10.1) by ``tests/spec/make_digest.py`` and committed, so a plain clone runs
these checks too; ``tests/test_spec_digest.py`` fails when it is stale.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DIGEST = Path(__file__).resolve().parent / "spec" / "ari-digest.json"

_PRIMITIVES = {"string", "boolean", "int", "long", "double", "float", "number", "Date", "object"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # e.g. /channels/{channelId}/play
    nickname: str
    params: dict[str, dict[str, Any]]  # name -> spec
    regex: re.Pattern[str]


@dataclass(frozen=True)
class AriSpec:
    operations: tuple[Operation, ...]
    models: dict[str, dict[str, Any]]

    def match(self, method: str, path: str) -> Operation | None:
        """The operation serving ``method path`` (path under /ari, no query)."""
        hits = [op for op in self.operations if op.method == method.upper() and op.regex.fullmatch(path)]
        # a literal segment beats a {param} one (e.g. /channels/create vs /channels/{channelId})
        hits.sort(key=lambda op: op.path.count("{"))
        return hits[0] if hits else None

    def check_request(self, method: str, path: str, params: dict[str, Any] | None = None) -> list[str]:
        """Problems with a request; ``params`` are query (or JSON body) parameters."""
        op = self.match(method, path)
        if op is None:
            return [f"{method} {path}: no such ARI operation"]
        problems = []
        params = params or {}
        for name, value in params.items():
            spec = op.params.get(name)
            if spec is None or spec.get("paramType") == "path":
                problems.append(f"{op.nickname}: unknown parameter {name!r}")
                continue
            allowed = (spec.get("allowableValues") or {}).get("values")
            if allowed and spec.get("allowableValues", {}).get("valueType") == "LIST":
                values = str(value).split(",") if spec.get("allowMultiple") else [str(value)]
                for v in values:
                    if v not in allowed:
                        problems.append(f"{op.nickname}: {name}={v!r} not in {allowed}")
        for name, spec in op.params.items():
            if (spec.get("required") and spec.get("paramType") not in ("path", "body")
                    and name not in params):
                problems.append(f"{op.nickname}: missing required parameter {name!r}")
        return problems

    def check_model(self, model: str, value: Any, where: str = "") -> list[str]:
        """Problems with ``value`` as an instance of ``model`` (events use their ``type``)."""
        where = where or model
        if model in ("string", "Date"):
            return [] if isinstance(value, str) else [f"{where}: expected string"]
        if model in ("int", "long"):
            return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: expected integer"]
        if model in ("double", "float", "number"):
            return [] if isinstance(value, (int, float)) else [f"{where}: expected number"]
        if model == "boolean":
            return [] if isinstance(value, bool) else [f"{where}: expected boolean"]
        if model == "object":
            return [] if isinstance(value, dict) else [f"{where}: expected object"]
        m = re.fullmatch(r"List\[(.+)\]", model)
        if m:
            if not isinstance(value, list):
                return [f"{where}: expected list"]
            return [p for i, v in enumerate(value) for p in self.check_model(m.group(1), v, f"{where}[{i}]")]
        if model not in self.models:
            return [f"{where}: unknown model {model}"]
        if not isinstance(value, dict):
            return [f"{where}: expected {model} object"]
        props = self.properties(model)
        problems = []
        for name, spec in props.items():
            if spec.get("required") and name not in value:
                problems.append(f"{where}: missing required {name!r}")
        for name, v in value.items():
            if name not in props:
                problems.append(f"{where}: {name!r} is not in the {model} model")
                continue
            problems.extend(self.check_model(props[name]["type"], v, f"{where}.{name}"))
            allowed = (props[name].get("allowableValues") or {}).get("values")
            if allowed and v not in allowed:
                problems.append(f"{where}.{name}: {v!r} not in {allowed}")
        return problems

    def check_event(self, event: dict[str, Any]) -> list[str]:
        kind = event.get("type")
        if not isinstance(kind, str) or kind not in self.models:
            return [f"event type {kind!r} is not an ARI event"]
        return self.check_model(kind, event, kind)

    def properties(self, model: str) -> dict[str, dict[str, Any]]:
        """A model's properties including its ancestors' (Message > Event > X)."""
        props: dict[str, dict[str, Any]] = {}
        for name, m in self.models.items():
            if model in m.get("subTypes", []):
                props.update(self.properties(name))
        props.update(self.models[model].get("properties", {}))
        return props


@lru_cache(maxsize=1)
def load_spec(digest: Path = DIGEST) -> AriSpec:
    """The checker over the committed digest (routes in upstream order, every model)."""
    data = json.loads(digest.read_text(encoding="utf-8"))
    operations = tuple(
        Operation(
            method=route["method"],
            path=route["path"],
            nickname=route["nickname"],
            params=route["parameters"],
            regex=re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(route["path"]))),
        )
        for route in data["routes"]
    )
    return AriSpec(operations, data["models"])
