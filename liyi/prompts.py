"""Mandarin prompts: from the texts in ``scripts_zh/`` to WAV files Asterisk can play.

Why this module exists: the engine plays ``sound:liyi/<name>`` (and the dialplan
fallback plays ``Playback(liyi/<name>)``); if a file is missing or in a format
Asterisk refuses, the caller hears silence, which the etiquette forbids (R2,
R9). So prompts are rendered *before* any call (``liyi prompts build``),
validated, and copied into Asterisk's sounds directory (``liyi prompts
install``) — never synthesised inside the event loop.

How a build decides what to do with each prompt:

- The text is ``scripts_zh/<name>.txt`` with ``#`` comment lines dropped and
  ``{company}`` replaced by the company name from the config.
- A family of prompts that differ only in one value shares a template: the
  hold announcements ``hold-announce-30`` … ``hold-announce-300`` are all
  ``scripts_zh/hold-announce.txt`` with ``{limit}`` said as 三十秒, 一分钟, 一分半钟
  … 五分钟, so an admin rewords them once. Each is still its own prompt with
  its own recording, because the engine picks one by the configured limit. A
  ``scripts_zh/hold-announce-<seconds>.txt`` of its own overrides the template.
  The queue announcements work the same way (R5): ``queue-ahead-1`` …
  ``queue-ahead-9`` are ``scripts_zh/queue-ahead.txt`` with ``{count}`` said
  as 一, 两, 三 … 九 (两位, not 二位), and ``queue-wait-1`` … ``queue-wait-10``
  are ``scripts_zh/queue-wait.txt`` with ``{minutes}`` said as 一, 两 … 十
  (两分钟). The ends of those ranges say something else — 您是下一位 for
  nobody ahead, 十位以上 and 超过十分钟 past the last number — so
  ``queue-ahead-0``, ``queue-ahead-many`` and ``queue-wait-many`` are
  ordinary prompts with texts of their own.
- ``recordings/liyi/.generated.json`` (the manifest) remembers, for every file
  we synthesised, a hash of what was spoken (voice, rate, text) and a hash of
  the bytes we wrote.
- A file whose bytes do not match the manifest was put there by a person (a
  real recording): it is never overwritten, only validated and reported
  ``"recorded"``.
- A file we generated whose text (or company, or rate) changed is generated
  again; one that still matches is ``"unchanged"``.

Audio format: Asterisk's ``format_wav`` reads ``.wav`` only as 8 kHz, 16-bit,
mono signed linear PCM and ``.wav16`` only as 16 kHz (it rejects a 16 kHz file
named ``.wav`` with "Unexpected frequency mismatch"). We generate 8 kHz
``.wav`` by default (``rate=16000`` gives ``.wav16``) and check recordings by
the same rules.

Voice: espeak-ng's Mandarin. In espeak-ng 1.51 (Debian 12) the voice ``cmn``
is "latin as English" and reads the pinyin its own dictionary produces as
English letters ("hao3" → "aitch-ay-oh-three"); ``cmn-latn-pinyin`` uses the
same dictionary and phonemes but reads that pinyin as Mandarin. So we use
``cmn-latn-pinyin`` when installed and fall back to ``cmn``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from callflow.config import QUEUE_AHEAD_MAX, QUEUE_WAIT_MAX_MINUTES

log = structlog.get_logger()

#: The hold limits (seconds) that have an announcement stating them (R4): every
#: 30 s up to five minutes. A hold limit configured outside this set has no
#: announcement to play.
HOLD_LIMITS: tuple[int, ...] = tuple(range(30, 301, 30))

#: The template the hold announcements are rendered from (``scripts_zh/hold-announce.txt``);
#: not a prompt itself, so no recording carries this name.
HOLD_ANNOUNCE_TEMPLATE = "hold-announce"


def hold_announce_name(limit_seconds: int) -> str:
    """The prompt that tells a caller put on hold for ``limit_seconds`` how long it will be (R4)."""
    if limit_seconds not in HOLD_LIMITS:
        raise ValueError(f"no hold announcement for {limit_seconds} s; "
                         f"limits with one: {', '.join(map(str, HOLD_LIMITS))}")
    return f"{HOLD_ANNOUNCE_TEMPLATE}-{limit_seconds}"


_DIGITS = "零一二三四五六七八九"


def _numeral(n: int) -> str:
    """1..99 as a Mandarin numeral, the way it is read: 十, 十五, 三十, 四十五."""
    if not 0 < n < 100:
        raise ValueError(f"{n} is outside 1..99")
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else f"{_DIGITS[tens]}十")
    return head + (_DIGITS[ones] if ones else "")


def spoken_duration(seconds: int) -> str:
    """``seconds`` as a caller hears a wait stated: 三十秒, 一分钟, 一分半钟, 两分钟, 两分十五秒.

    Counted minutes take 两, not 二 (两分钟), and a half minute is 半 (一分半钟),
    as an agent would say it; the handbook's own example is 稍等一分钟.
    """
    if not 0 < seconds < 100 * 60:
        raise ValueError(f"cannot state a wait of {seconds} s")
    minutes, rest = divmod(seconds, 60)
    if minutes == 0:
        return f"{_numeral(rest)}秒"
    count = "两" if minutes == 2 else _numeral(minutes)
    if rest == 0:
        return f"{count}分钟"
    if rest == 30:
        return f"{count}分半钟"
    return f"{count}分{_numeral(rest)}秒"


@dataclass(frozen=True)
class TemplatedPrompt:
    """A prompt whose text is a shared template with placeholders filled per prompt."""

    template: str  # the stem of scripts_zh/<template>.txt
    values: tuple[tuple[str, str], ...]  # placeholder → words, e.g. (("limit", "一分钟"),)


def spoken_count(n: int) -> str:
    """``n`` as said before a measure word (位, 分钟): 一, 两, 三 … 十, 十二, 二十二.

    A counted 2 is 两 (两位客户, 两分钟), but 12 and 22 keep 二 (十二位), as in
    ``spoken_duration``.
    """
    return "两" if n == 2 else _numeral(n)


#: The templates of the queue announcements (R5), ``scripts_zh/<template>.txt``;
#: like ``hold-announce``, not prompts themselves.
QUEUE_AHEAD_TEMPLATE = "queue-ahead"
QUEUE_WAIT_TEMPLATE = "queue-wait"

#: R4: one announcement per hold limit, from ``hold-announce.txt`` with ``{limit}``.
HOLD_ANNOUNCEMENTS: dict[str, TemplatedPrompt] = {
    hold_announce_name(limit): TemplatedPrompt(
        HOLD_ANNOUNCE_TEMPLATE, (("limit", spoken_duration(limit)),))
    for limit in HOLD_LIMITS
}

#: R5: the caller's place in line, 1 … 9 callers ahead, from ``queue-ahead.txt`` with
#: ``{count}``. 0 (您是下一位) and more than nine (十位以上) have texts of their own.
QUEUE_AHEAD_ANNOUNCEMENTS: dict[str, TemplatedPrompt] = {
    f"{QUEUE_AHEAD_TEMPLATE}-{n}": TemplatedPrompt(
        QUEUE_AHEAD_TEMPLATE, (("count", spoken_count(n)),))
    for n in range(1, QUEUE_AHEAD_MAX + 1)
}

#: R5: the expected wait, 1 … 10 minutes, from ``queue-wait.txt`` with ``{minutes}``.
#: Longer (超过十分钟) has a text of its own.
QUEUE_WAIT_ANNOUNCEMENTS: dict[str, TemplatedPrompt] = {
    f"{QUEUE_WAIT_TEMPLATE}-{m}": TemplatedPrompt(
        QUEUE_WAIT_TEMPLATE, (("minutes", spoken_count(m)),))
    for m in range(1, QUEUE_WAIT_MAX_MINUTES + 1)
}

#: Prompts rendered from a template unless ``scripts_zh/<name>.txt`` exists.
TEMPLATED_PROMPTS: dict[str, TemplatedPrompt] = {
    **HOLD_ANNOUNCEMENTS, **QUEUE_AHEAD_ANNOUNCEMENTS, **QUEUE_WAIT_ANNOUNCEMENTS,
}

#: Every prompt a deployment needs. The engine plays the greetings, ring-wait,
#: closings, holds, transfers, flow steps, queue announcements and callbacks as
#: ``sound:liyi/<name>``; the dialplan fallback (``asterisk-conf/extensions.conf``)
#: plays ``fallback-*`` and ``closing-thanks``.
PROMPT_NAMES: tuple[str, ...] = (
    "greeting-morning",
    "greeting-noon",
    "greeting-afternoon",
    "greeting-evening",
    "greeting-closed",
    "ring-wait",
    "closing-more",
    "closing-thanks",
    "fallback-apology",
    "fallback-busy",
    # R4/R7 holds: the announcement stating the limit, reassurance while on hold,
    # the caller's choice at the limit (1 keep waiting, 2 back to the agent), the return.
    *HOLD_ANNOUNCEMENTS,
    "hold-reassure",
    "hold-limit-ask",
    "hold-return",
    # R6 warm transfers: the caller's consent (1 yes, 2 no), the announcement to the
    # target agent (1 accept, 2 decline), the apology when the target does not take it.
    "transfer-consent",
    "transfer-announce",
    "transfer-failed",
    # The agent left mid-call and the caller is queued again for another agent (R5, R9).
    "requeue-apology",
    # Call flows: the example key menu, said again after no key or a wrong one, and
    # the caller saying their name after the tone (R3, played to a transfer target in R6).
    "menu-main",
    "menu-no-input",
    "menu-invalid",
    "name-ask",
    # R5 queues: the caller's place in line, the expected wait, and "keep waiting" chosen.
    "queue-ahead-0",
    *QUEUE_AHEAD_ANNOUNCEMENTS,
    "queue-ahead-many",
    *QUEUE_WAIT_ANNOUNCEMENTS,
    "queue-wait-many",
    "queue-continue",
    # R5/R8 callbacks: the offer (queue, closed flow), the number read back digit by
    # digit and confirmed or keyed in again, the thanks; and to the agent placing one.
    "callback-offer",
    "callback-offer-closed",
    "callback-enter",
    "callback-number-is",
    *(f"digit-{d}" for d in "0123456789"),
    "callback-confirm",
    "callback-recorded",
    "callback-no-number",
    "callback-dialing",
)

#: Sub-directory of the recordings dir and of Asterisk's sounds dir, so that
#: ``sound:liyi/<name>`` and ``Playback(liyi/<name>)`` resolve.
SOUND_SUBDIR = "liyi"
MANIFEST_NAME = ".generated.json"
PLACEHOLDERS: frozenset[str] = frozenset({"company"})
SUPPORTED_RATES: dict[int, str] = {8000: ".wav", 16000: ".wav16"}
VOICES: tuple[str, ...] = ("cmn-latn-pinyin", "cmn")

_LEAD_IN_MS = 200  # the first syllable must not be clipped while the media path settles
_TAIL_MS = 300
_HEADROOM_DB = 3.0
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CONVERT_HINT = "convert with: sox IN -r 8000 -c 1 -b 16 -e signed-integer OUT.wav"

PromptSource = Literal["recorded", "generated", "unchanged"]


@dataclass(frozen=True)
class BuiltPrompt:
    """One prompt after a build: where its audio is and where that audio came from."""

    name: str
    path: Path
    source: PromptSource  # "recorded" (a person's recording kept) | "generated" | "unchanged"


class PromptError(Exception):
    """A prompt text or audio file that cannot be used; the message names the file."""


class BadRecordingError(PromptError):
    """Audio files Asterisk would refuse (or that are missing), one line per problem.

    Raised after every other prompt was handled, so one bad file never blocks
    the rest: ``built`` / ``installed`` hold what did succeed.
    """

    def __init__(
        self,
        problems: list[str],
        *,
        built: list[BuiltPrompt] | None = None,
        installed: list[Path] | None = None,
    ) -> None:
        self.problems = list(problems)
        self.built = list(built or [])
        self.installed = list(installed or [])
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"unusable prompt audio ({_CONVERT_HINT}):\n{lines}")


class SynthesisUnavailableError(PromptError):
    """espeak-ng (or ffmpeg, which resamples) is not installed."""


# --------------------------------------------------------------------------- texts


def render_text(name: str, company: str, scripts_dir: Path) -> str:
    """The words prompt ``name`` says: comments dropped, placeholders filled in.

    Lines are joined without a separator because Mandarin has no spaces between
    words; a wrapped sentence reads as one. Unknown ``{placeholders}`` are an
    error rather than being spoken aloud as "left brace ...". A templated
    prompt (``TEMPLATED_PROMPTS``) without a text of its own is its template
    with the prompt's values filled in; a template that leaves a value out is
    an error, because then e.g. every hold announcement would say the same
    thing whatever the limit (R4).
    """
    scripts_dir = Path(scripts_dir)
    own = scripts_dir / f"{name}.txt"
    templated = TEMPLATED_PROMPTS.get(name)
    values: dict[str, str] = {}
    path = own
    if templated is not None and not own.exists():
        path = scripts_dir / f"{templated.template}.txt"
        values = dict(templated.values)
    try:
        raw = path.read_text(encoding="utf-8-sig")  # -sig: Notepad's BOM
    except FileNotFoundError:
        wanted = f"scripts_zh/{name}.txt"
        if templated is not None:
            wanted = f"scripts_zh/{templated.template}.txt (or {wanted})"
        raise PromptError(f"{path}: prompt text missing (prompt {name} needs {wanted})")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    lines = [ln.strip() for ln in raw.splitlines()]
    text = "".join(ln for ln in lines if ln and not ln.startswith("#"))
    if not text:
        raise PromptError(f"{path}: no text (only comments or blank lines)")
    used = {m.group(1) for m in _PLACEHOLDER.finditer(text)}
    allowed = PLACEHOLDERS | values.keys()
    unknown = sorted(used - allowed)
    if unknown:
        listed = ", ".join(f"{{{p}}}" for p in sorted(allowed))
        raise PromptError(
            f"{path}: unknown placeholder(s) {', '.join(f'{{{u}}}' for u in unknown)}; "
            f"allowed: {listed}"
        )
    left_out = sorted(values.keys() - used)
    if left_out:
        raise PromptError(
            f"{path}: template must say {', '.join(f'{{{k}}}' for k in left_out)} "
            f"(it is filled in per prompt, e.g. {name}: "
            f"{', '.join(f'{k}={values[k]}' for k in left_out)})"
        )
    if "{company}" in text and not company.strip():
        raise PromptError(f"{path}: uses {{company}} but the company name is empty")
    fills = {"company": company.strip(), **values}
    return _PLACEHOLDER.sub(lambda m: fills[m.group(1)], text)  # one pass: no filling inside a fill


def prompts_in(scripts_dir: Path) -> set[str]:
    """The prompt names ``scripts_dir`` has a text for: what a config may refer to.

    Each ``<name>.txt`` is one, except a template, which stands for the
    prompts rendered from it (``hold-announce.txt`` → ``hold-announce-30`` …
    ``hold-announce-300``): a config naming ``hold-announce`` would play a
    recording that does not exist.
    """
    stems = {p.stem for p in Path(scripts_dir).glob("*.txt")}
    templates = {t.template for t in TEMPLATED_PROMPTS.values()}
    rendered = {name for name, t in TEMPLATED_PROMPTS.items() if t.template in stems}
    return (stems - templates) | rendered


# --------------------------------------------------------------------------- checking audio


def check_recording(path: Path) -> list[str]:
    """Why Asterisk could not play ``path`` (empty list: it can).

    Mirrors ``format_wav``'s header checks (RIFF/WAVE, PCM format 1, mono,
    2 bytes per sample, 8000 Hz for ``.wav`` or 16000 Hz for ``.wav16``) and
    adds what Asterisk would accept but a caller would hear as silence (no
    audio data). Each message starts with the file's path.
    """
    path = Path(path)
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [f"{where}: file not found"]
    except OSError as exc:
        return [f"{where}: unreadable ({exc.strerror or exc})"]
    if not data:
        return [f"{where}: empty file (0 bytes)"]
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_RATES.values():
        return [f"{where}: unsupported extension {path.suffix!r}; use .wav (8 kHz) or .wav16 (16 kHz)"]
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return [f"{where}: not a WAV file (no RIFF/WAVE header)"]

    fmt: tuple[int, int, int, int, int] | None = None
    data_len: int | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                return [f"{where}: not a WAV file (truncated 'fmt ' chunk)"]
            tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            data_len = min(size, len(data) - body)
            break
        pos = body + size + (size & 1)  # chunks are word-aligned

    if fmt is None:
        return [f"{where}: not a WAV file (no 'fmt ' chunk)"]
    tag, channels, rate, block_align, bits = fmt
    problems: list[str] = []
    if tag != 1:
        problems.append(
            f"{where}: not plain PCM (WAV format tag {tag:#06x}); Asterisk reads only format 1"
        )
    if channels != 1:
        problems.append(f"{where}: not mono ({channels} channels)")
    if bits != 16 or (channels and block_align != 2 * channels):
        problems.append(f"{where}: not 16-bit ({bits}-bit samples)")
    expected_rate = {ext: hz for hz, ext in SUPPORTED_RATES.items()}[suffix]
    if rate not in SUPPORTED_RATES:
        problems.append(
            f"{where}: sample rate {rate} Hz; Asterisk needs 8000 Hz (.wav) or 16000 Hz (.wav16)"
        )
    elif rate != expected_rate:
        problems.append(
            f"{where}: {rate} Hz audio must be named {SUPPORTED_RATES[rate]}, not {suffix} "
            f"(Asterisk reads {suffix} as {expected_rate} Hz only)"
        )
    if data_len is None:
        problems.append(f"{where}: no 'data' chunk (no audio)")
    elif data_len == 0:
        problems.append(f"{where}: empty (no audio samples)")
    return problems


# --------------------------------------------------------------------------- building


def build_prompts(
    scripts_dir: Path,
    recordings_dir: Path,
    *,
    company: str,
    rate: int = 8000,
    progress: Callable[[str], None] = print,
) -> list[BuiltPrompt]:
    """Make ``recordings_dir/liyi/<name>.wav`` for every prompt, keeping people's recordings.

    Raises ``BadRecordingError`` (after handling every other prompt) when a
    recording a person dropped in cannot be played; that file is left as it is.
    """
    if rate not in SUPPORTED_RATES:
        raise PromptError(f"rate {rate} Hz not supported; Asterisk plays 8000 (.wav) or 16000 (.wav16)")
    scripts_dir, out_dir = Path(scripts_dir), Path(recordings_dir) / SOUND_SUBDIR
    texts = {name: render_text(name, company, scripts_dir) for name in PROMPT_NAMES}
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(out_dir)
    if not manifest and any(_audio_files(out_dir, n) for n in PROMPT_NAMES):
        progress(f"! {out_dir / MANIFEST_NAME} missing or unreadable: existing files are kept "
                 "as recordings; delete the ones you want generated again")
    voice: str | None = None  # looked up only if something must be synthesised
    built: list[BuiltPrompt] = []
    problems: list[str] = []

    for name in PROMPT_NAMES:
        entry = manifest.get(name)
        ours = _our_file(out_dir, entry)
        recorded = [p for p in _audio_files(out_dir, name) if p != ours]
        if recorded:
            playable = False
            for path in recorded:
                bad = check_recording(path)
                if bad:
                    problems.extend(bad)
                    progress(f"✗ {name}: recording {path.name} cannot be played — left untouched")
                else:
                    playable = True
                    built.append(BuiltPrompt(name, path, "recorded"))
                    progress(f"• {name}: keeping recorded {path.name}")
                    log.info("prompt_recording_kept", prompt=name, path=str(path))
            if playable:  # a person's recording replaces what we generated (if at the other rate)
                if ours is not None:
                    ours.unlink()
                manifest.pop(name, None)
            continue
        _warn_unused_files(out_dir, name, progress)

        target = out_dir / f"{name}{SUPPORTED_RATES[rate]}"
        if ours == target and entry is not None and entry.get("spoken_sha256") == _spoken_hash(
            str(entry.get("voice")), rate, texts[name]
        ):  # checked with the voice it was made with: no espeak-ng needed to confirm it
            built.append(BuiltPrompt(name, target, "unchanged"))
            progress(f"• {name}: unchanged")
            continue
        if voice is None:
            voice = pick_voice()
        spoken = _spoken_hash(voice, rate, texts[name])
        if ours is not None and ours != target:
            ours.unlink()  # e.g. a rate change: the old .wav16 would shadow the new .wav
        _synthesise(texts[name], target, voice=voice, rate=rate)
        manifest[name] = {
            "file": target.name,
            "text": texts[name],
            "voice": voice,
            "rate": rate,
            "spoken_sha256": spoken,
            "audio_sha256": _file_hash(target),
        }
        _save_manifest(out_dir, manifest)  # after each file: an interrupted build stays consistent
        built.append(BuiltPrompt(name, target, "generated"))
        progress(f"✓ {name}: generated {target.name} ({texts[name]})")
        log.info("prompt_generated", prompt=name, path=str(target), voice=voice, rate=rate)

    _save_manifest(out_dir, manifest)
    if problems:
        raise BadRecordingError(problems, built=built)
    return built


def _audio_files(out_dir: Path, name: str) -> list[Path]:
    return [out_dir / f"{name}{ext}" for ext in SUPPORTED_RATES.values()
            if (out_dir / f"{name}{ext}").exists()]


def _our_file(out_dir: Path, entry: dict[str, Any] | None) -> Path | None:
    """The file the manifest says we wrote, if its bytes are still exactly ours."""
    if not entry:
        return None
    path = out_dir / str(entry.get("file", ""))
    if path.parent != out_dir or not path.is_file():
        return None
    return path if _file_hash(path) == entry.get("audio_sha256") else None


def _warn_unused_files(out_dir: Path, name: str, progress: Callable[[str], None]) -> None:
    """A person who drops ``greeting-morning.mp3`` should learn why it is not played."""
    for path in sorted(out_dir.glob(f"{name}.*")):
        if path.suffix.lower() not in SUPPORTED_RATES.values():
            progress(f"! {name}: {path.name} is ignored — Asterisk needs .wav/.wav16; {_CONVERT_HINT}")


def _spoken_hash(voice: str, rate: int, text: str) -> str:
    return hashlib.sha256(f"{voice}\n{rate}\n{text}".encode()).hexdigest()


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_manifest(out_dir: Path) -> dict[str, dict[str, Any]]:
    path = out_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # Losing the manifest only means our old files now look "recorded";
        # safer than guessing, and the progress line says so.
        log.warning("prompt_manifest_unreadable", path=str(path))
        return {}
    prompts = data.get("prompts", {}) if isinstance(data, dict) else {}
    return {k: v for k, v in prompts.items() if isinstance(v, dict)}


def _save_manifest(out_dir: Path, manifest: dict[str, dict[str, Any]]) -> None:
    body = {
        "about": "Prompts liyi generated (liyi prompts build). A file whose bytes do not "
                 "match audio_sha256 is a person's recording and is never overwritten.",
        "prompts": {k: manifest[k] for k in sorted(manifest)},
    }
    _atomic_write(out_dir / MANIFEST_NAME,
                  (json.dumps(body, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so Asterisk never opens a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- synthesis


def espeak_available() -> bool:
    """Whether prompts can be synthesised here (espeak-ng and ffmpeg installed)."""
    return shutil.which("espeak-ng") is not None and shutil.which("ffmpeg") is not None


def pick_voice() -> str:
    """The Mandarin espeak-ng voice to use (see the module docstring for why not plain ``cmn``)."""
    if shutil.which("espeak-ng") is None:
        raise SynthesisUnavailableError(
            "espeak-ng not found; install it (Debian/Ubuntu: apt-get install espeak-ng) "
            "or record every prompt yourself (see recordings/README.md)"
        )
    if shutil.which("ffmpeg") is None:
        raise SynthesisUnavailableError("ffmpeg not found (it resamples speech to 8 kHz); "
                                        "apt-get install ffmpeg")
    listing = subprocess.run(["espeak-ng", "--voices=zh"], capture_output=True, text=True,
                             check=False).stdout
    installed = {line.split()[1].lower() for line in listing.splitlines()[1:] if len(line.split()) > 1}
    for voice in VOICES:
        if voice in installed:
            return voice
    raise SynthesisUnavailableError(
        f"espeak-ng has no Mandarin voice (looked for {', '.join(VOICES)}); "
        "install espeak-ng-data"
    )


def _synthesise(text: str, target: Path, *, voice: str, rate: int) -> None:
    """Speak ``text`` into ``target``: mono, 16-bit, ``rate`` Hz, canonical 44-byte header.

    espeak-ng writes 22.05 kHz; ffmpeg's resampler (through pydub) low-passes
    before decimating, which audioop's plain interpolation would not, so
    sibilants do not alias on an 8 kHz line. The final write uses Python's
    ``wave`` (pydub's direct path) so the header is the plain 44 bytes
    Asterisk's ``wav_seek``/``wav_tell`` assume.
    """
    with warnings.catch_warnings():  # pydub imports audioop, deprecated in 3.11 (audioop-lts on 3.13+)
        warnings.simplefilter("ignore", DeprecationWarning)
        from pydub import AudioSegment, effects  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="liyi-tts-") as tmp:
        spoken, resampled = Path(tmp) / "spoken.wav", Path(tmp) / "resampled.wav"
        proc = subprocess.run(
            ["espeak-ng", "-v", voice, "-b", "1", "-w", str(spoken), "--stdin"],
            input=text.encode("utf-8"), capture_output=True, check=False,
        )
        if proc.returncode != 0 or not spoken.exists():
            raise PromptError(f"{target}: espeak-ng failed: "
                              f"{proc.stderr.decode('utf-8', 'replace').strip()}")
        seg = AudioSegment.from_wav(str(spoken)).set_channels(1).set_sample_width(2)
        seg = effects.normalize(seg, headroom=_HEADROOM_DB)
        seg = (AudioSegment.silent(_LEAD_IN_MS, frame_rate=seg.frame_rate) + seg
               + AudioSegment.silent(_TAIL_MS, frame_rate=seg.frame_rate))
        seg.export(str(resampled), format="wav",
                   parameters=["-ar", str(rate), "-ac", "1", "-acodec", "pcm_s16le"])
        final = (AudioSegment.from_wav(str(resampled))
                 .set_channels(1).set_sample_width(2).set_frame_rate(rate))
        staged = Path(tmp) / "final.wav"
        final.export(str(staged), format="wav")
        _atomic_write(target, staged.read_bytes())


# --------------------------------------------------------------------------- installing


def install_prompts(
    recordings_dir: Path, target_dir: Path, *, progress: Callable[[str], None] = print
) -> list[Path]:
    """Copy every playable prompt into ``target_dir/liyi/`` (normally Asterisk's sounds dir).

    Installed there, ``sound:liyi/<name>`` and ``Playback(liyi/<name>)`` find
    the file for any channel language: Asterisk looks in ``<sounds>/zh/liyi/``,
    then ``<sounds>/liyi/``, then ``<sounds>/en/liyi/`` (see
    recordings/README.md). Bad or missing files are not copied — the old
    installed file, if any, stays — and ``BadRecordingError`` lists them after
    the good ones are in place.
    """
    src = Path(recordings_dir) / SOUND_SUBDIR
    if not src.is_dir():
        raise PromptError(f"{src}: no prompts to install; run `liyi prompts build` first")
    dest = Path(target_dir) / SOUND_SUBDIR
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)  # Asterisk runs as its own user and must read the files
    installed: list[Path] = []
    problems: list[str] = []

    for path in _installable(src):
        bad = check_recording(path)
        if bad:
            problems.extend(bad)
            progress(f"✗ {path.name}: not installed")
            continue
        stem = path.name[: -len(path.suffix)]
        for ext in SUPPORTED_RATES.values():  # one format per prompt, or Asterisk may pick the stale one
            stale = dest / f"{stem}{ext}"
            if ext != path.suffix.lower() and stale.exists():
                stale.unlink()
        target = dest / path.name
        _atomic_write(target, path.read_bytes())
        installed.append(target)
        progress(f"✓ {path.name} → {target}")
        log.info("prompt_installed", path=str(target))

    present = {p.name[: -len(p.suffix)] for p in _installable(src)}
    problems.extend(f"{src / (name + '.wav')}: missing; run `liyi prompts build` or record it"
                    for name in PROMPT_NAMES if name not in present)
    if problems:
        raise BadRecordingError(problems, installed=installed)
    return installed


def _installable(src: Path) -> Iterable[Path]:
    return sorted(p for p in src.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in SUPPORTED_RATES.values())
