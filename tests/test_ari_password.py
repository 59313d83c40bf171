"""The ARI password hash for ari.conf (``liyi asterisk ari-password``, issue 9).

Asterisk checks ``password_format = crypt`` with the C library's crypt(3);
what we print must be exactly what that function computes, or the
controller cannot log in.
"""

from __future__ import annotations

import io
import random
import string
import warnings

import pytest

from liyi.ari_password import ITOA64, ari_password_hash, sha512_crypt
from liyi.cli import main


def libc_crypt() -> object | None:
    """Python's binding to crypt(3) where it still exists (3.11, 3.12), else None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # noqa: PLC0415 — deprecated, only to cross-check
        except ImportError:
            return None
    return crypt


class TestSha512Crypt:
    def test_the_specifications_own_examples(self) -> None:
        """The two $6$ examples of Drepper's specification come out character for character."""
        assert sha512_crypt("Hello world!", "saltstring") == (
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbY"
            "EdFCoEOfaS35inz1")
        assert sha512_crypt("Hello world!", "saltstringsaltstring", 10000) == (
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0"
            "Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.")

    def test_same_as_the_c_library_for_any_password(self) -> None:
        """For short, long (over 64 bytes) and non-ASCII passwords the hash equals crypt(3)'s."""
        crypt = libc_crypt()
        if crypt is None:
            pytest.skip("this Python has no crypt module to compare with")
        rnd = random.Random(9)
        for _ in range(40):
            password = "".join(rnd.choice(string.printable + "礼仪") for _ in range(rnd.randrange(1, 150)))
            salt = "".join(rnd.choice(ITOA64) for _ in range(rnd.randrange(1, 20)))
            assert sha512_crypt(password, salt) == crypt.crypt(password, f"$6${salt}")  # type: ignore[attr-defined]

    def test_a_fresh_salt_each_time_and_an_empty_password_refused(self) -> None:
        """Two hashes of one password differ (random salt) and an empty password is an error."""
        first, second = ari_password_hash("s3cret"), ari_password_hash("s3cret")
        assert first != second and first.startswith("$6$") and second.startswith("$6$")
        assert sha512_crypt("s3cret", first.split("$")[2]) == first
        with pytest.raises(ValueError, match="empty"):
            ari_password_hash("")


class TestAriPasswordCommand:
    def test_hash_of_the_environment_password(self, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """`liyi asterisk ari-password` prints one $6$ hash of LIYI_ARI_PASSWORD, nothing else."""
        monkeypatch.setenv("LIYI_ARI_PASSWORD", "from-the-env")
        assert main(["asterisk", "ari-password"]) == 0
        out = capsys.readouterr().out.strip()
        assert out.count("\n") == 0 and out.startswith("$6$")
        assert sha512_crypt("from-the-env", out.split("$")[2]) == out

    def test_no_password_and_no_terminal_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        """Without LIYI_ARI_PASSWORD and no terminal to ask on, it says so and exits 1."""
        monkeypatch.delenv("LIYI_ARI_PASSWORD", raising=False)
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        assert main(["asterisk", "ari-password"]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and "LIYI_ARI_PASSWORD" in captured.err

    def test_prompted_twice_and_a_mismatch_prints_nothing(self, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        """Asked in a terminal, two different entries print no hash and exit 1."""
        monkeypatch.delenv("LIYI_ARI_PASSWORD", raising=False)
        tty = io.StringIO("")
        tty.isatty = lambda: True  # type: ignore[method-assign]
        monkeypatch.setattr("sys.stdin", tty)
        answers = iter(["one", "two"])
        monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
        assert main(["asterisk", "ari-password"]) == 1
        assert capsys.readouterr().out == ""
