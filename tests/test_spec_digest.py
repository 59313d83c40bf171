"""The suite runs from a plain clone: what it checks against is inside the repository.

The ARI checks read ``tests/spec/ari-digest.json`` (made by
``tests/spec/make_digest.py`` from the upstream description in
``../shared/asterisk-spec/ari/``) and the trace replays read ``tests/traces/``.
Only the digest's freshness needs the upstream folder, so only that test may
skip, and it says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.ari_spec import DIGEST, load_spec
from tests.spec import make_digest

TESTS = Path(__file__).resolve().parent
# the modules allowed to name the sibling folder: the one that regenerates the digest
# from it, and this one, which names it to look for it
NAMES_UPSTREAM = {TESTS / "spec" / "make_digest.py", Path(__file__).resolve()}


def _outside_paths(source: str) -> list[tuple[int, str]]:
    """String literals (docstrings aside) that point at the sibling ../shared folder."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    hits = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            text = node.value
            if (text.strip("/") == "shared" or "../shared" in text or "/work/shared" in text
                    or "asterisk-spec" in text or "asterisk-traces" in text):
                hits.append((node.lineno, text))
    return hits


class TestPlainClone:
    """Nothing the suite reads lives outside the repository."""

    def test_no_test_reads_the_sibling_shared_folder(self) -> None:
        """A plain clone without ../shared runs every test: no test module builds a path into it."""
        offenders = [
            f"{path.relative_to(TESTS.parent)}:{line}: {text!r}"
            for path in sorted(TESTS.rglob("*.py")) if path not in NAMES_UPSTREAM
            for line, text in _outside_paths(path.read_text(encoding="utf-8"))
        ]
        assert offenders == [], "copy what they read into tests/ (traces/, spec/):\n" + "\n".join(
            offenders)

    def test_checker_reads_the_committed_digest(self) -> None:
        """The ARI checks work from the repository alone: the digest has the routes and events they use."""
        spec = load_spec()
        assert spec.match("POST", "/channels/c1/play") is not None
        assert spec.check_request("POST", "/channels/c1/answer", {"force": "1"}) != []
        assert "StasisStart" in spec.models and "channel" in spec.properties("StasisStart")
        assert DIGEST == make_digest.DIGEST


class TestDigestFreshness:
    """The committed digest is what make_digest.py makes from the upstream description."""

    def test_digest_is_up_to_date_with_the_upstream_description(self) -> None:
        """After an upgrade of ../shared/asterisk-spec/ari the stale digest is caught, with the command to fix it."""
        upstream = make_digest.UPSTREAM
        if not (upstream / "resources.json").is_file():
            pytest.skip(f"no upstream ARI description at {upstream} (a plain clone): "
                        "the committed digest cannot be compared with it")
        fresh = make_digest.render(make_digest.build_digest(upstream))
        assert DIGEST.read_text(encoding="utf-8") == fresh, (
            f"tests/spec/ari-digest.json is stale: run python tests/spec/make_digest.py {upstream}")
