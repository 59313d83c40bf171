"""Regenerate ``tests/spec/ari-digest.json`` from the upstream ARI API description.

Why a digest: the tests check the simulator and the client against what the
real Asterisk documents (routes, their parameters, event and resource models).
The upstream description (Swagger "api-docs", ~190 kB of prose-heavy JSON) sits
outside this repository in ``../shared/asterisk-spec/ari/``, so a plain clone
could not run those checks. The digest keeps, in the repository, exactly what
the checker (``tests/ari_spec.py``) reads — and nothing it could drift on by
hand: it is only ever written by this script.

What is kept, with upstream's own key names:

- ``routes``: one per operation, in upstream order (resources.json, then each
  file's ``apis``): ``path``, ``method``, ``nickname``, ``responseClass`` and
  ``parameters`` (name → ``paramType``, ``dataType``, ``required``,
  ``allowMultiple``, ``allowableValues``, ``defaultValue`` when upstream has
  them). Descriptions, summaries and error texts are dropped.
- ``models``: every model (events from ``events.json`` and resources such as
  Channel, Bridge, Playback) with ``subTypes`` and ``properties`` (name →
  ``type``, ``required``, ``allowableValues``).
- ``source``: the ``apiVersion`` and the sha256 of every upstream file read, so
  an upgrade of the upstream copy shows up as a stale digest even when only
  prose changed.

Usage (from the repository root)::

    python tests/spec/make_digest.py                 # from ../shared/asterisk-spec/ari
    python tests/spec/make_digest.py PATH/TO/ari     # from another copy
    python tests/spec/make_digest.py --check         # exit 1 if the digest is stale

Standard library only, so it runs with any Python 3.11+ and no venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DIGEST = HERE / "ari-digest.json"
# the sibling folder of the repository, as in the development machine's layout
UPSTREAM = HERE.parents[2] / "shared" / "asterisk-spec" / "ari"

_PARAM_KEYS = ("paramType", "dataType", "required", "allowMultiple", "allowableValues",
               "defaultValue")
_PROPERTY_KEYS = ("type", "required", "allowableValues")


def _keep(spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Only the checked keys of a parameter or property, in a fixed order."""
    return {k: spec[k] for k in keys if k in spec}


def build_digest(ari_dir: Path) -> dict[str, Any]:
    """The digest of the ARI description in ``ari_dir`` (a folder holding resources.json)."""
    resources_file = ari_dir / "resources.json"
    resources = json.loads(resources_file.read_text(encoding="utf-8"))
    files = {"resources.json": hashlib.sha256(resources_file.read_bytes()).hexdigest()}
    routes: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    for api in resources["apis"]:
        name = api["path"].split("/")[-1].replace("{format}", "json")
        raw = (ari_dir / name).read_bytes()
        files[name] = hashlib.sha256(raw).hexdigest()
        doc = json.loads(raw)
        for model_name, model in doc.get("models", {}).items():
            entry: dict[str, Any] = {}
            if model.get("subTypes"):
                entry["subTypes"] = list(model["subTypes"])
            entry["properties"] = {
                prop: _keep(spec, _PROPERTY_KEYS)
                for prop, spec in model.get("properties", {}).items()
            }
            models[model_name] = entry
        for api_entry in doc.get("apis", []):
            for op in api_entry.get("operations", []):
                routes.append({
                    "path": api_entry["path"],
                    "method": op["httpMethod"],
                    "nickname": op["nickname"],
                    "responseClass": op.get("responseClass", "void"),
                    "parameters": {
                        p["name"]: _keep(p, _PARAM_KEYS) for p in op.get("parameters", [])
                    },
                })
    return {
        "about": "Digest of the Asterisk ARI API description; written by "
                 "tests/spec/make_digest.py, do not edit by hand.",
        "source": {"apiVersion": resources.get("apiVersion"), "sha256": files},
        "routes": routes,
        "models": models,
    }


def render(digest: dict[str, Any]) -> str:
    """The digest as committed: one route or model per line, so a diff names what changed."""
    def line(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    out = ["{"]
    out.append(f' "about": {line(digest["about"])},')
    out.append(f' "source": {line(digest["source"])},')
    out.append(' "routes": [')
    routes = digest["routes"]
    out += [f"  {line(r)}{',' if i < len(routes) - 1 else ''}" for i, r in enumerate(routes)]
    out.append(" ],")
    out.append(' "models": {')
    models = list(digest["models"].items())
    out += [f"  {line(k)}: {line(m)}{',' if i < len(models) - 1 else ''}"
            for i, (k, m) in enumerate(models)]
    out.append(" }")
    out.append("}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the digest; the exit status tells CI if it is stale."""
    parser = argparse.ArgumentParser(
        description="Regenerate tests/spec/ari-digest.json from the upstream ARI description.")
    parser.add_argument("ari_dir", nargs="?", type=Path, default=UPSTREAM,
                        help=f"upstream ARI description folder (default: {UPSTREAM})")
    parser.add_argument("--out", type=Path, default=DIGEST, help=f"digest file (default: {DIGEST})")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the digest differs from the upstream")
    args = parser.parse_args(argv)
    if not (args.ari_dir / "resources.json").is_file():
        parser.error(f"{args.ari_dir}: no resources.json (the upstream ARI api-docs folder)")
    text = render(build_digest(args.ari_dir))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is stale: run python tests/spec/make_digest.py {args.ari_dir}",
                  file=sys.stderr)
            return 1
        print(f"{args.out} is up to date with {args.ari_dir}")
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text)} bytes) from {args.ari_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
