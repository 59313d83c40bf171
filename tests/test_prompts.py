"""Prompt texts, their audio, and installing them where Asterisk looks (liyi/prompts.py)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from liyi.cli import known_prompts
from liyi.prompts import (
    MANIFEST_NAME,
    PROMPT_NAMES,
    BadRecordingError,
    BuiltPrompt,
    PromptError,
    build_prompts,
    check_recording,
    espeak_available,
    hold_announce_name,
    install_prompts,
    pick_voice,
    prompts_in,
    render_text,
    spoken_duration,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts_zh"
RECORDINGS = REPO / "recordings"
COMPANY = "礼仪客服中心"  # the example config's company; the repo's WAVs are built for it

GREETING_SALUTATIONS = {
    "greeting-morning": "早上好",
    "greeting-noon": "中午好",
    "greeting-afternoon": "下午好",
    "greeting-evening": "晚上好",
    "greeting-closed": "您好",
}

#: R4: how each hold announcement states its limit, written out by hand (not computed).
HOLD_LIMIT_WORDS = {
    30: "三十秒",
    60: "一分钟",
    90: "一分半钟",
    120: "两分钟",
    150: "两分半钟",
    180: "三分钟",
    210: "三分半钟",
    240: "四分钟",
    270: "四分半钟",
    300: "五分钟",
}

#: Prompts that ask for a key press, and the choices they must offer (the engine acts on 1 and 2).
KEY_CHOICES = {
    "hold-limit-ask": ("继续等待请按1", "返回通话请按2"),
    "transfer-consent": ("同意请按1", "不转请按2"),
    "transfer-announce": ("接听请按1", "不接请按2"),
}

HOLD_TEMPLATE = "# 注释\n请您稍等{limit}好吗？\n"

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="espeak-ng and ffmpeg are not installed (CI installs them: "
           "apt-get install espeak-ng ffmpeg), so prompts cannot be synthesised here",
)


def write_wav(path: Path, *, rate: int = 8000, channels: int = 1, sampwidth: int = 2,
              seconds: float = 0.8) -> Path:
    """A tone in the given format, written with the standard library (no espeak needed)."""
    frames = int(rate * seconds)
    amplitude = 0.3 * (2 ** (8 * sampwidth - 1) - 1)
    samples = bytearray()
    for i in range(frames):
        value = int(amplitude * math.sin(2 * math.pi * 440 * i / rate))
        if sampwidth == 1:
            frame = bytes([value + 128])
        elif sampwidth == 2:
            frame = struct.pack("<h", value)
        else:
            frame = value.to_bytes(sampwidth, "little", signed=True)
        samples += frame * channels
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(bytes(samples))
    return path


def wav_params(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes() / w.getframerate()


def by_name(built: list[BuiltPrompt]) -> dict[str, BuiltPrompt]:
    return {b.name: b for b in built}


def quiet(_: str) -> None:
    """Progress sink for tests."""


@pytest.fixture(scope="module")
def first_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[BuiltPrompt]]:
    """One synthesised build shared by the build tests (each copies it before changing it)."""
    if not espeak_available():
        pytest.skip("espeak-ng and ffmpeg are not installed (CI installs them)")
    root = tmp_path_factory.mktemp("built") / "recordings"
    return root, build_prompts(SCRIPTS, root, company=COMPANY, progress=quiet)


@pytest.fixture
def built_once(first_build: tuple[Path, list[BuiltPrompt]]) -> Path:
    """The shared build's recordings dir (read-only by convention)."""
    return first_build[0]


@pytest.fixture
def recordings(built_once: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the shared build."""
    copy = tmp_path / "recordings"
    shutil.copytree(built_once, copy)
    yield copy


@pytest.fixture
def fake_recordings(tmp_path: Path) -> Path:
    """A recordings dir holding a valid tone for every prompt (for install tests, no espeak)."""
    root = tmp_path / "recordings"
    for name in PROMPT_NAMES:
        write_wav(root / "liyi" / f"{name}.wav")
    return root


class TestRenderText:
    @pytest.mark.parametrize("name", PROMPT_NAMES)
    def test_every_prompt_has_a_text(self, name: str) -> None:
        """Every prompt the engine or dialplan plays has a non-empty text in scripts_zh/."""
        text = render_text(name, COMPANY, SCRIPTS)
        assert text.strip()
        assert "#" not in text and "{" not in text and "}" not in text

    def test_company_is_filled_in(self) -> None:
        """{company} is replaced by the configured company name."""
        text = render_text("fallback-apology", "星河物业", SCRIPTS)
        assert "星河物业" in text
        assert "{company}" not in text

    @pytest.mark.parametrize(("name", "salutation"), sorted(GREETING_SALUTATIONS.items()))
    def test_greetings_say_salutation_then_company(self, name: str, salutation: str) -> None:
        """R2: each greeting opens with its salutation and names the company."""
        text = render_text(name, "星河物业", SCRIPTS)
        assert text.startswith(salutation)
        assert text.index(salutation) < text.index("星河物业")

    @pytest.mark.parametrize("name", [n for n in GREETING_SALUTATIONS if n != "greeting-closed"])
    def test_band_greetings_ask_how_to_help(self, name: str) -> None:
        """R2: the band greetings end with the handbook's 请问有什么可以帮您？"""
        assert render_text(name, COMPANY, SCRIPTS).endswith("请问有什么可以帮您？")

    def test_closings_follow_the_handbook(self) -> None:
        """R8: the closing prompts use the handbook's wording."""
        assert render_text("closing-more", COMPANY, SCRIPTS) == "请问您还有其他问题吗？"
        assert render_text("closing-thanks", COMPANY, SCRIPTS) == "感谢您的来电，欢迎您随时来电。"

    def test_comments_and_line_breaks_are_not_spoken(self, tmp_path: Path) -> None:
        """Lines starting with # are dropped and wrapped lines join without spaces."""
        (tmp_path / "x.txt").write_text("# 说明 {company}\n您好，\n  {company}。\n\n", encoding="utf-8")
        assert render_text("x", "甲公司", tmp_path) == "您好，甲公司。"

    def test_unknown_placeholder_is_an_error_naming_the_file(self, tmp_path: Path) -> None:
        """A typo such as {compnay} raises instead of being read out to callers."""
        (tmp_path / "x.txt").write_text("您好，{compnay}。", encoding="utf-8")
        with pytest.raises(PromptError, match=r"x\.txt.*\{compnay\}"):
            render_text("x", "甲公司", tmp_path)

    def test_missing_text_is_an_error_naming_the_file(self, tmp_path: Path) -> None:
        """A prompt without its text file raises, naming the expected path."""
        with pytest.raises(PromptError, match=r"greeting-noon\.txt"):
            render_text("greeting-noon", "甲公司", tmp_path)


class TestHoldAndTransferTexts:
    def test_hold_announcements_cover_every_half_minute_to_five_minutes(self) -> None:
        """There is one hold announcement per 30 s limit from 30 s to 300 s, each its own prompt."""
        announced = [n for n in PROMPT_NAMES if n.startswith("hold-announce")]
        assert announced == [f"hold-announce-{s}" for s in HOLD_LIMIT_WORDS]
        assert [hold_announce_name(s) for s in HOLD_LIMIT_WORDS] == announced

    @pytest.mark.parametrize(("seconds", "words"), sorted(HOLD_LIMIT_WORDS.items()))
    def test_hold_announcement_states_its_limit(self, seconds: int, words: str) -> None:
        """R4: hold-announce-<s> gives the reason, asks consent and states the limit in Mandarin words."""
        text = render_text(f"hold-announce-{seconds}", COMPANY, SCRIPTS)
        assert text == f"就您所提的这个问题我需要查询相关信息，请您稍等{words}好吗？"

    @pytest.mark.parametrize(("seconds", "words"), [
        (45, "四十五秒"), (10, "十秒"), (135, "两分十五秒"), (600, "十分钟"), (720, "十二分钟"),
        (750, "十二分半钟"), (1260, "二十一分钟"),
    ])
    def test_spoken_duration_beyond_the_announced_limits(self, seconds: int, words: str) -> None:
        """Durations read as an agent says them: 两 only for two minutes, 十二 not 十两, 半 for a half."""
        assert spoken_duration(seconds) == words

    @pytest.mark.parametrize("seconds", [0, -30, 6000])
    def test_spoken_duration_refuses_what_it_cannot_say(self, seconds: int) -> None:
        """A wait of zero, a negative or 100 minutes and more raises instead of saying nonsense."""
        with pytest.raises(ValueError):
            spoken_duration(seconds)

    @pytest.mark.parametrize("seconds", [0, 45, 330])
    def test_no_announcement_for_other_limits(self, seconds: int) -> None:
        """A limit without a recording is refused by name, so the engine never plays a missing file."""
        with pytest.raises(ValueError, match=str(seconds)):
            hold_announce_name(seconds)

    def test_reassurance_follows_the_rulebook(self) -> None:
        """R4: the reassurance during a hold is the rulebook's 仍在为您查询，请您稍候。"""
        assert render_text("hold-reassure", COMPANY, SCRIPTS) == "仍在为您查询，请您稍候。"

    def test_transfer_consent_says_why_then_asks(self) -> None:
        """R6 step 1: the caller is told why (a colleague who knows this problem) before being asked for the key."""
        text = render_text("transfer-consent", COMPANY, SCRIPTS)
        assert text.startswith("为您转接熟悉此问题的同事，")
        assert text.index("熟悉此问题") < text.index("同意请按1")

    def test_transfer_consent_asks_for_the_key_within_about_six_seconds(self) -> None:
        """The shipped consent recording lasts about 7 s (the handbook's sentence took 15 s before any key was asked for)."""
        with wave.open(str(RECORDINGS / "liyi" / "transfer-consent.wav"), "rb") as audio:
            seconds = audio.getnframes() / audio.getframerate()
        assert 3.0 < seconds <= 7.5
        text = render_text("transfer-consent", COMPANY, SCRIPTS)
        assert text.index("同意请按1") <= 13  # asked after one short clause, ~5 s into the prompt

    @pytest.mark.parametrize(("name", "choices"), sorted(KEY_CHOICES.items()))
    def test_key_prompts_offer_1_then_2(self, name: str, choices: tuple[str, str]) -> None:
        """Each prompt the engine waits on for a key names both choices, 1 before 2."""
        text = render_text(name, COMPANY, SCRIPTS)
        first, second = choices
        assert first in text and second in text
        assert text.index(first) < text.index(second)

    @pytest.mark.parametrize("name", ["hold-limit-ask", "hold-return", "transfer-failed",
                                      "requeue-apology"])
    def test_bad_news_starts_with_an_apology(self, name: str) -> None:
        """A caller kept waiting or handed back hears 很抱歉 first."""
        assert render_text(name, COMPANY, SCRIPTS).startswith("很抱歉")

    @pytest.mark.parametrize("name", PROMPT_NAMES)
    def test_every_prompt_uses_the_polite_you(self, name: str) -> None:
        """Prompts address the listener as 您, never the informal 你."""
        assert "你" not in render_text(name, COMPANY, SCRIPTS)

    def test_own_text_overrides_the_template(self, tmp_path: Path) -> None:
        """scripts_zh/hold-announce-90.txt, when present, is used instead of the shared template."""
        (tmp_path / "hold-announce.txt").write_text(HOLD_TEMPLATE, encoding="utf-8")
        (tmp_path / "hold-announce-90.txt").write_text("请您稍等九十秒。", encoding="utf-8")
        assert render_text("hold-announce-90", COMPANY, tmp_path) == "请您稍等九十秒。"
        assert render_text("hold-announce-60", COMPANY, tmp_path) == "请您稍等一分钟好吗？"

    def test_template_without_the_limit_is_an_error(self, tmp_path: Path) -> None:
        """A hold template that drops {limit} raises, naming the file, instead of hiding the limit (R4)."""
        (tmp_path / "hold-announce.txt").write_text("请您稍等好吗？", encoding="utf-8")
        with pytest.raises(PromptError, match=r"hold-announce\.txt.*\{limit\}"):
            render_text("hold-announce-60", COMPANY, tmp_path)

    def test_limit_outside_the_template_is_unknown(self, tmp_path: Path) -> None:
        """{limit} means nothing in an ordinary prompt and is refused like any typo."""
        (tmp_path / "hold-reassure.txt").write_text("请您稍等{limit}。", encoding="utf-8")
        with pytest.raises(PromptError, match=r"hold-reassure\.txt.*\{limit\}"):
            render_text("hold-reassure", COMPANY, tmp_path)

    def test_missing_template_names_it(self, tmp_path: Path) -> None:
        """A hold announcement with neither template nor own text names the template file to write."""
        with pytest.raises(PromptError, match=r"hold-announce\.txt"):
            render_text("hold-announce-120", COMPANY, tmp_path)


class TestKnownPrompts:
    def test_config_check_knows_every_prompt(self) -> None:
        """liyi check-config accepts exactly the prompts that have recordings, hold variants included."""
        known = known_prompts()
        assert known == set(PROMPT_NAMES)
        assert {f"hold-announce-{s}" for s in HOLD_LIMIT_WORDS} <= known
        assert "hold-announce" not in known, "the template has no recording of its own"

    def test_template_stands_for_its_variants(self, tmp_path: Path) -> None:
        """A template file yields its rendered names; without it only own-text variants exist."""
        (tmp_path / "ring-wait.txt").write_text("请您稍候。", encoding="utf-8")
        (tmp_path / "hold-announce-60.txt").write_text("请您稍等一分钟。", encoding="utf-8")
        assert prompts_in(tmp_path) == {"ring-wait", "hold-announce-60"}
        (tmp_path / "hold-announce.txt").write_text(HOLD_TEMPLATE, encoding="utf-8")
        assert prompts_in(tmp_path) == {"ring-wait"} | {f"hold-announce-{s}" for s in HOLD_LIMIT_WORDS}


class TestCheckRecording:
    def test_asterisk_format_passes(self, tmp_path: Path) -> None:
        """8 kHz mono 16-bit .wav and 16 kHz .wav16 are both playable."""
        assert check_recording(write_wav(tmp_path / "a.wav")) == []
        assert check_recording(write_wav(tmp_path / "b.wav16", rate=16000)) == []

    @pytest.mark.parametrize(
        ("kwargs", "filename", "expected"),
        [
            ({"channels": 2}, "a.wav", "not mono"),
            ({"sampwidth": 1}, "a.wav", "not 16-bit"),
            ({"sampwidth": 3}, "a.wav", "not 16-bit"),
            ({"rate": 44100}, "a.wav", "sample rate 44100 Hz"),
            ({"rate": 16000}, "a.wav", "must be named .wav16"),
            ({"rate": 8000}, "a.wav16", "must be named .wav"),
            ({"seconds": 0}, "a.wav", "empty"),
        ],
    )
    def test_wrong_format_is_named(self, tmp_path: Path, kwargs: dict[str, int], filename: str,
                                   expected: str) -> None:
        """Each format Asterisk refuses (or plays as silence) gets a message naming file and fault."""
        path = write_wav(tmp_path / filename, **kwargs)
        problems = check_recording(path)
        assert any(expected in p and str(path) in p for p in problems), problems

    def test_not_a_wav(self, tmp_path: Path) -> None:
        """Bytes that are not a RIFF/WAVE file are reported as not a WAV."""
        path = tmp_path / "x.wav"
        path.write_bytes(b"ID3\x03\x00 this is an mp3 renamed")
        assert any("not a WAV" in p for p in check_recording(path))

    def test_empty_and_missing_files(self, tmp_path: Path) -> None:
        """A zero-byte file and a missing file each get a clear message."""
        (tmp_path / "e.wav").write_bytes(b"")
        assert any("empty file" in p for p in check_recording(tmp_path / "e.wav"))
        assert any("not found" in p for p in check_recording(tmp_path / "gone.wav"))

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A path that cannot be read (here a directory) is reported, not raised."""
        (tmp_path / "d.wav").mkdir()
        assert any("unreadable" in p for p in check_recording(tmp_path / "d.wav"))


class TestRepositoryRecordings:
    @pytest.mark.parametrize("name", PROMPT_NAMES)
    def test_checked_in_wav_is_playable(self, name: str) -> None:
        """A checkout carries a playable recordings/liyi/<name>.wav for every prompt."""
        path = RECORDINGS / "liyi" / f"{name}.wav"
        assert check_recording(path) == []
        channels, width, rate, seconds = wav_params(path)
        assert (channels, width, rate) == (1, 2, 8000) and seconds > 0.5

    def test_manifest_matches_the_checked_in_files(self) -> None:
        """Every manifest entry is a current prompt whose committed WAV has exactly the recorded hash."""
        manifest = json.loads((RECORDINGS / "liyi" / MANIFEST_NAME).read_text(encoding="utf-8"))
        for name, entry in manifest["prompts"].items():
            assert name in PROMPT_NAMES, f"manifest lists {name}, which is no prompt"
            path = RECORDINGS / "liyi" / entry["file"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["audio_sha256"], name
            assert entry["text"] == render_text(name, COMPANY, SCRIPTS), name

    def test_checked_in_wavs_match_the_texts(self, tmp_path: Path) -> None:
        """No committed generated WAV is stale: each matches current scripts_zh/ for 礼仪客服中心 or is a person's recording."""
        copy = tmp_path / "recordings"
        shutil.copytree(RECORDINGS, copy)
        built = build_prompts(SCRIPTS, copy, company=COMPANY, progress=quiet)
        stale = [b.name for b in built if b.source not in ("unchanged", "recorded")]
        assert stale == [], "edited texts without `liyi prompts build`"
        assert [b.name for b in built] == list(PROMPT_NAMES)


@needs_espeak
class TestBuild:
    def test_generates_asterisk_wavs(self, built_once: Path) -> None:
        """Build writes liyi/<name>.wav, mono 16-bit 8 kHz, longer than 0.5 s, for every prompt."""
        for name in PROMPT_NAMES:
            path = built_once / "liyi" / f"{name}.wav"
            channels, width, rate, seconds = wav_params(path)
            assert (channels, width, rate) == (1, 2, 8000), name
            assert seconds > 0.5, name
            assert path.read_bytes()[36:40] == b"data", "canonical 44-byte header"

    def test_first_build_reports_generated(self, first_build: tuple[Path, list[BuiltPrompt]]) -> None:
        """A first build reports every prompt as generated and records it in the manifest."""
        root, built = first_build
        assert [b.name for b in built] == list(PROMPT_NAMES)
        assert {b.source for b in built} == {"generated"}
        assert all(b.path == root / "liyi" / f"{b.name}.wav" for b in built)
        manifest = json.loads((root / "liyi" / MANIFEST_NAME).read_text(encoding="utf-8"))
        assert set(manifest["prompts"]) == set(PROMPT_NAMES)

    def test_rebuild_leaves_unchanged_files_alone(self, recordings: Path) -> None:
        """A rebuild with nothing changed reports unchanged and rewrites no file."""
        before = {p.name: p.read_bytes() for p in (recordings / "liyi").glob("*.wav")}
        built = build_prompts(SCRIPTS, recordings, company=COMPANY, progress=quiet)
        assert {b.source for b in built} == {"unchanged"}
        assert {p.name: p.read_bytes() for p in (recordings / "liyi").glob("*.wav")} == before

    def test_changing_company_regenerates(self, recordings: Path) -> None:
        """A new company name regenerates the prompts that say it, and only those."""
        path = recordings / "liyi" / "greeting-morning.wav"
        old = path.read_bytes()
        built = by_name(build_prompts(SCRIPTS, recordings, company="星河物业", progress=quiet))
        assert built["greeting-morning"].source == "generated"
        assert built["fallback-apology"].source == "generated"
        assert built["closing-thanks"].source == "unchanged"
        assert path.read_bytes() != old
        manifest = json.loads((recordings / "liyi" / MANIFEST_NAME).read_text(encoding="utf-8"))
        assert "星河物业" in manifest["prompts"]["greeting-morning"]["text"]

    def test_changing_text_regenerates(self, recordings: Path, tmp_path: Path) -> None:
        """An edited text regenerates that prompt."""
        scripts = tmp_path / "scripts"
        shutil.copytree(SCRIPTS, scripts)
        (scripts / "ring-wait.txt").write_text("请您稍候，马上为您接通。\n", encoding="utf-8")
        built = by_name(build_prompts(scripts, recordings, company=COMPANY, progress=quiet))
        assert built["ring-wait"].source == "generated"
        assert built["closing-more"].source == "unchanged"

    def test_human_recording_survives_rebuilds(self, recordings: Path) -> None:
        """A recording a person put in place is kept, byte for byte, through rebuilds and a company change."""
        path = write_wav(recordings / "liyi" / "greeting-noon.wav", seconds=1.2)
        mine = path.read_bytes()
        for company in (COMPANY, "星河物业"):
            built = by_name(build_prompts(SCRIPTS, recordings, company=company, progress=quiet))
            assert built["greeting-noon"] == BuiltPrompt("greeting-noon", path, "recorded")
            assert path.read_bytes() == mine

    def test_human_wav16_replaces_generated_wav(self, recordings: Path) -> None:
        """A 16 kHz .wav16 recording wins and our .wav is removed so it cannot shadow it."""
        rec = write_wav(recordings / "liyi" / "closing-more.wav16", rate=16000)
        built = by_name(build_prompts(SCRIPTS, recordings, company=COMPANY, progress=quiet))
        assert built["closing-more"] == BuiltPrompt("closing-more", rec, "recorded")
        assert not (recordings / "liyi" / "closing-more.wav").exists()

    def test_deleting_a_recording_brings_back_the_generated_voice(self, recordings: Path) -> None:
        """Removing a person's recording makes the next build generate the prompt again."""
        path = write_wav(recordings / "liyi" / "ring-wait.wav")
        build_prompts(SCRIPTS, recordings, company=COMPANY, progress=quiet)
        path.unlink()
        built = by_name(build_prompts(SCRIPTS, recordings, company=COMPANY, progress=quiet))
        assert built["ring-wait"].source == "generated"
        assert wav_params(path)[:3] == (1, 2, 8000)

    def test_corrupt_recording_is_reported_and_kept(self, recordings: Path) -> None:
        """A bad file dropped in is named in the error, left untouched, and the other prompts still build."""
        bad = write_wav(recordings / "liyi" / "greeting-evening.wav", channels=2)
        content = bad.read_bytes()
        messages: list[str] = []
        with pytest.raises(BadRecordingError) as caught:
            build_prompts(SCRIPTS, recordings, company="星河物业", progress=messages.append)
        assert "greeting-evening.wav" in str(caught.value) and "not mono" in str(caught.value)
        assert bad.read_bytes() == content
        done = by_name(caught.value.built)
        assert "greeting-evening" not in done
        assert done["greeting-morning"].source == "generated"
        assert any("greeting-evening" in m for m in messages)

    def test_16k_build_writes_wav16(self, recordings: Path) -> None:
        """rate=16000 writes .wav16 files (Asterisk's name for 16 kHz WAV) and drops the 8 kHz ones."""
        built = build_prompts(SCRIPTS, recordings, company=COMPANY, rate=16000, progress=quiet)
        for b in built:
            assert b.path.suffix == ".wav16" and b.source == "generated"
            assert check_recording(b.path) == []
            assert not b.path.with_suffix(".wav").exists()

    def test_unsupported_rate_is_refused(self, tmp_path: Path) -> None:
        """Only the two rates Asterisk's format_wav plays are accepted."""
        with pytest.raises(PromptError, match="44100"):
            build_prompts(SCRIPTS, tmp_path, company=COMPANY, rate=44100, progress=quiet)

    def test_voice_reads_mandarin_not_english(self) -> None:
        """The chosen espeak-ng voice speaks the greeting as Mandarin phonemes, not spelled-out English."""
        voice = pick_voice()
        text = render_text("greeting-morning", COMPANY, SCRIPTS)
        phonemes = subprocess.run(["espeak-ng", "-v", voice, "-b", "1", "-q", "-x", text],
                                  capture_output=True, text=True, check=True).stdout
        assert phonemes.strip() and "(en)" not in phonemes


class TestInstall:
    def test_copies_into_liyi_subdir(self, fake_recordings: Path, tmp_path: Path) -> None:
        """Install copies every prompt to DIR/liyi/<name>.wav unchanged, without the manifest."""
        (fake_recordings / "liyi" / MANIFEST_NAME).write_text("{}", encoding="utf-8")
        sounds = tmp_path / "sounds"
        installed = install_prompts(fake_recordings, sounds, progress=quiet)
        assert sorted(installed) == sorted(sounds / "liyi" / f"{n}.wav" for n in PROMPT_NAMES)
        for path in installed:
            assert path.read_bytes() == (fake_recordings / "liyi" / path.name).read_bytes()
            assert path.stat().st_mode & 0o444 == 0o444, "Asterisk's user must read it"
        assert not (sounds / "liyi" / MANIFEST_NAME).exists()

    def test_corrupt_wav_is_named_and_not_installed(self, fake_recordings: Path, tmp_path: Path) -> None:
        """A bad file is named in the error and not copied; the good prompts are installed."""
        bad = fake_recordings / "liyi" / "closing-thanks.wav"
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
        sounds = tmp_path / "sounds"
        with pytest.raises(BadRecordingError) as caught:
            install_prompts(fake_recordings, sounds, progress=quiet)
        assert str(bad) in str(caught.value)
        assert not (sounds / "liyi" / "closing-thanks.wav").exists()
        assert (sounds / "liyi" / "greeting-morning.wav") in caught.value.installed

    def test_bad_file_keeps_the_installed_copy(self, fake_recordings: Path, tmp_path: Path) -> None:
        """A bad new file does not overwrite a good copy installed earlier."""
        sounds = tmp_path / "sounds"
        install_prompts(fake_recordings, sounds, progress=quiet)
        good = (sounds / "liyi" / "ring-wait.wav").read_bytes()
        write_wav(fake_recordings / "liyi" / "ring-wait.wav", rate=44100)
        with pytest.raises(BadRecordingError, match="ring-wait.wav"):
            install_prompts(fake_recordings, sounds, progress=quiet)
        assert (sounds / "liyi" / "ring-wait.wav").read_bytes() == good

    def test_missing_prompt_is_reported(self, fake_recordings: Path, tmp_path: Path) -> None:
        """A prompt with no audio at all is reported so the caller never hears silence."""
        (fake_recordings / "liyi" / "greeting-noon.wav").unlink()
        with pytest.raises(BadRecordingError, match="greeting-noon.*missing"):
            install_prompts(fake_recordings, tmp_path / "sounds", progress=quiet)

    def test_stale_other_rate_copy_is_removed(self, fake_recordings: Path, tmp_path: Path) -> None:
        """Installing greeting-morning.wav removes an old greeting-morning.wav16 Asterisk might prefer."""
        stale = write_wav(tmp_path / "sounds" / "liyi" / "greeting-morning.wav16", rate=16000)
        install_prompts(fake_recordings, tmp_path / "sounds", progress=quiet)
        assert not stale.exists()

    def test_nothing_built_is_a_clear_error(self, tmp_path: Path) -> None:
        """Installing before any build says to run the build."""
        with pytest.raises(PromptError, match="liyi prompts build"):
            install_prompts(tmp_path / "empty", tmp_path / "sounds", progress=quiet)
