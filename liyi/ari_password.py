"""The ARI password as Asterisk stores it: a SHA-512 crypt(3) hash (``$6$salt$…``).

Why a hash: ``ari.conf`` is readable by the ``asterisk`` group and ends up in
backups; with ``password_format = crypt`` a copy of the file does not give
away the password the controller logs in with (``LIYI_ARI_PASSWORD``).
Asterisk checks it with the C library's ``crypt()`` (``ast_crypt_validate``),
which on Debian (libxcrypt) and every glibc takes the ``$6$`` method.

Why our own code: Python's ``crypt`` module is deprecated and gone in 3.13,
and passlib is unmaintained; SHA-512 crypt is a short, fixed algorithm
(Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512", the ``$6$`` part),
so it lives here, checked against the C library by the tests.
"""

from __future__ import annotations

import hashlib
import secrets

#: crypt(3)'s alphabet for salts and the encoded hash.
ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: crypt(3)'s default cost. Asterisk checks the password on every ARI request
#: (HTTP basic auth, no session), so a much higher cost would be paid for each
#: REST call the controller makes, on Asterisk's CPU.
DEFAULT_ROUNDS = 5000
ROUNDS_MIN, ROUNDS_MAX = 1000, 999_999_999
SALT_LENGTH = 16  # the longest salt $6$ uses

# The order in which the 64 digest bytes are encoded, three at a time (the spec's table).
_ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
          (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
          (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
          (18, 39, 60), (40, 61, 19), (62, 20, 41)]


def _b64(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    """``digest`` repeated to ``length`` bytes (the spec's P and S sequences)."""
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: str, salt: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """``crypt(password, "$6$[rounds=N$]salt")`` exactly as the C library computes it.

    ``rounds`` equal to the default is left out of the result, as crypt(3) does.
    """
    if not ROUNDS_MIN <= rounds <= ROUNDS_MAX:
        raise ValueError(f"rounds must be within {ROUNDS_MIN}..{ROUNDS_MAX}")
    if not salt or any(c not in ITOA64 for c in salt):
        raise ValueError("salt must be made of crypt(3)'s characters [./0-9A-Za-z]")
    key = password.encode("utf-8")
    salt_b = salt[:SALT_LENGTH].encode("ascii")

    alternate = hashlib.sha512(key + salt_b + key).digest()
    a = hashlib.sha512(key + salt_b)
    a.update(_repeat(alternate, len(key)))
    n = len(key)
    while n:
        a.update(alternate if n & 1 else key)
        n >>= 1
    a_digest = a.digest()

    p = _repeat(hashlib.sha512(key * len(key)).digest(), len(key))
    s = _repeat(hashlib.sha512(salt_b * (16 + a_digest[0])).digest(), len(salt_b))

    c = a_digest
    for i in range(rounds):
        h = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()

    encoded = "".join(_b64(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + _b64(0, 0, c[63], 2)
    prefix = "$6$" if rounds == DEFAULT_ROUNDS else f"$6$rounds={rounds}$"
    return f"{prefix}{salt_b.decode('ascii')}${encoded}"


def ari_password_hash(password: str, *, salt: str | None = None) -> str:
    """The value for ``ari.conf`` ``password`` with ``password_format = crypt``.

    A fresh random salt each time, so two installs with the same password
    do not share a hash. An empty password is refused: ARI would then
    accept anyone on the host.
    """
    if not password:
        raise ValueError("the ARI password is empty")
    if salt is None:
        salt = "".join(secrets.choice(ITOA64) for _ in range(SALT_LENGTH))
    return sha512_crypt(password, salt)
