"""Issue 4 prompts: call-flow menus, the recorded name, queue announcements and callbacks (R3, R5, R8).

Every prompt the engine can play for these features must have a text in
``scripts_zh/`` and a playable recording in ``recordings/liyi/``, or a caller
would hear silence; the queue templates must say the right number.
"""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from callflow.config import (
    CALLBACK_PROMPTS,
    CLOSING_MORE_PROMPT,
    QUEUE_AHEAD_MAX,
    QUEUE_PROMPTS,
    QUEUE_WAIT_MAX_MINUTES,
    queue_ahead_prompt,
    queue_wait_prompt,
)
from callflow.flow import CALLBACK_PROMPT, MENU_INVALID_PROMPT, MENU_NO_INPUT_PROMPT, NAME_PROMPT
from liyi.cli import known_prompts
from liyi.prompts import (
    PROMPT_NAMES,
    TEMPLATED_PROMPTS,
    PromptError,
    check_recording,
    prompts_in,
    render_text,
    spoken_count,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts_zh"
RECORDINGS = REPO / "recordings"
COMPANY = "礼仪客服中心"

FLOW_PROMPTS = (NAME_PROMPT, CALLBACK_PROMPT, MENU_NO_INPUT_PROMPT, MENU_INVALID_PROMPT, "menu-main")
ENGINE_PROMPTS = (*QUEUE_PROMPTS, *CALLBACK_PROMPTS, CLOSING_MORE_PROMPT, *FLOW_PROMPTS)

#: R5: how many callers are ahead, written out by hand (not computed): counted 2 is 两.
AHEAD_WORDS = {1: "一", 2: "两", 3: "三", 5: "五", 9: "九"}
#: R5: the expected wait in minutes, written out by hand.
WAIT_WORDS = {1: "一", 2: "两", 4: "四", 10: "十"}

#: Prompts that ask for a key press, and the choices they must offer, in order.
KEY_CHOICES = {
    "callback-offer": ("回电请按1", "继续等待请按2"),
    "callback-confirm": ("确认请按1", "重新输入请按2"),
    "callback-offer-closed": ("回电请按1",),
    "menu-main": ("请按1", "请按2", "请按3"),
}

#: Phone-number digits as read back to the caller: 1 is 幺 so it is not heard as 七.
DIGIT_WORDS = dict(zip("0123456789", "零幺二三四五六七八九", strict=True))


def text(name: str) -> str:
    return render_text(name, COMPANY, SCRIPTS)


class TestEveryEnginePromptExists:
    @pytest.mark.parametrize("name", ENGINE_PROMPTS)
    def test_prompt_is_built(self, name: str) -> None:
        """Each prompt the engine plays for flows, queues, callbacks and closing is one build makes."""
        assert name in PROMPT_NAMES
        assert name in known_prompts(), "liyi check-config would reject a flow using it"

    @pytest.mark.parametrize("name", ENGINE_PROMPTS)
    def test_prompt_has_a_text_and_a_playable_recording(self, name: str) -> None:
        """Each of them has a text in scripts_zh/ and an 8 kHz mono 16-bit recording checked in."""
        assert text(name).strip()
        path = RECORDINGS / "liyi" / f"{name}.wav"
        assert check_recording(path) == []
        with wave.open(str(path), "rb") as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
            assert w.getnframes() / w.getframerate() > 0.5

    @pytest.mark.parametrize("ahead", [0, 1, 5, QUEUE_AHEAD_MAX, QUEUE_AHEAD_MAX + 1, 40])
    def test_every_place_in_line_has_a_prompt(self, ahead: int) -> None:
        """Whatever the caller's place in line, the engine's choice of prompt is one that exists."""
        assert queue_ahead_prompt(ahead) in PROMPT_NAMES

    @pytest.mark.parametrize("seconds", [1, 60, 61, 119, 600, 601, 3600])
    def test_every_expected_wait_has_a_prompt(self, seconds: int) -> None:
        """Whatever the expected wait, the engine's choice of prompt is one that exists."""
        assert queue_wait_prompt(seconds) in PROMPT_NAMES

    def test_templates_are_not_prompts(self) -> None:
        """The queue templates stand for their rendered prompts and have no recording of their own."""
        known = known_prompts()
        assert "queue-ahead" not in known and "queue-wait" not in known
        assert "queue-ahead" not in PROMPT_NAMES and "queue-wait" not in PROMPT_NAMES
        assert not (RECORDINGS / "liyi" / "queue-ahead.wav").exists()


class TestQueueAnnouncements:
    @pytest.mark.parametrize(("ahead", "words"), sorted(AHEAD_WORDS.items()))
    def test_place_in_line_says_the_number(self, ahead: int, words: str) -> None:
        """R5: queue-ahead-N tells the caller, in Mandarin numerals, how many wait ahead (两位, not 二位)."""
        assert text(f"queue-ahead-{ahead}") == f"您前面还有{words}位客户在等待，请您稍候。"

    def test_nobody_ahead_says_next(self) -> None:
        """R5: with nobody ahead the caller hears they are next, not 'zero callers ahead'."""
        assert text("queue-ahead-0").startswith("您是下一位")
        assert "queue-ahead-0" not in TEMPLATED_PROMPTS

    def test_many_ahead_says_ten_or_more(self) -> None:
        """R5: past the last numbered prompt the caller hears 十位以上."""
        assert "十位以上" in text("queue-ahead-many")
        assert QUEUE_AHEAD_MAX == 9, "queue-ahead-many says 十位以上; change its text with the maximum"

    @pytest.mark.parametrize(("minutes", "words"), sorted(WAIT_WORDS.items()))
    def test_expected_wait_says_the_minutes(self, minutes: int, words: str) -> None:
        """R5: queue-wait-N states the expected wait in minutes (两分钟 for two)."""
        assert text(f"queue-wait-{minutes}") == f"预计等待时间约{words}分钟，请您稍候。"

    def test_long_wait_says_over_ten_minutes(self) -> None:
        """R5: past ten minutes the caller hears 超过十分钟."""
        assert "超过十分钟" in text("queue-wait-many")
        assert QUEUE_WAIT_MAX_MINUTES == 10, "queue-wait-many says 超过十分钟; change its text with the maximum"

    @pytest.mark.parametrize(("n", "words"), [(1, "一"), (2, "两"), (10, "十"), (12, "十二"), (22, "二十二")])
    def test_spoken_count(self, n: int, words: str) -> None:
        """A counted 2 alone is 两, but 12 and 22 keep 二."""
        assert spoken_count(n) == words

    def test_queue_template_without_its_number_is_an_error(self, tmp_path: Path) -> None:
        """A queue-ahead template that drops {count} raises, naming the file, so no caller hears a wrong place."""
        (tmp_path / "queue-ahead.txt").write_text("请您稍候。", encoding="utf-8")
        with pytest.raises(PromptError, match=r"queue-ahead\.txt.*\{count\}"):
            render_text("queue-ahead-3", COMPANY, tmp_path)

    def test_own_text_overrides_the_queue_template(self, tmp_path: Path) -> None:
        """scripts_zh/queue-wait-2.txt, when present, replaces the template for two minutes only."""
        (tmp_path / "queue-wait.txt").write_text("约{minutes}分钟。", encoding="utf-8")
        (tmp_path / "queue-wait-2.txt").write_text("大约两分钟。", encoding="utf-8")
        assert render_text("queue-wait-2", COMPANY, tmp_path) == "大约两分钟。"
        assert render_text("queue-wait-3", COMPANY, tmp_path) == "约三分钟。"

    def test_templates_expand_to_their_prompts(self, tmp_path: Path) -> None:
        """A queue template file yields exactly its rendered prompt names for check-config."""
        (tmp_path / "queue-ahead.txt").write_text("您前面还有{count}位。", encoding="utf-8")
        expected = {f"queue-ahead-{n}" for n in range(1, QUEUE_AHEAD_MAX + 1)}
        assert prompts_in(tmp_path) == expected


class TestCallbackAndFlowTexts:
    @pytest.mark.parametrize(("name", "choices"), sorted(KEY_CHOICES.items()))
    def test_key_prompts_name_their_choices_in_order(self, name: str, choices: tuple[str, ...]) -> None:
        """Each prompt the engine waits on for a key names its choices, lowest key first."""
        said = text(name)
        positions = [said.index(choice) for choice in choices]
        assert positions == sorted(positions)

    @pytest.mark.parametrize(("digit", "word"), sorted(DIGIT_WORDS.items()))
    def test_digits_read_as_in_phone_numbers(self, digit: str, word: str) -> None:
        """R3/R8: digit-N says the digit as a phone number is read back (1 as 幺)."""
        assert text(f"digit-{digit}") == word

    def test_callback_offer_apologises_first(self) -> None:
        """R5: the caller who waited the maximum hears 很抱歉让您久等了 before the choice."""
        assert text("callback-offer").startswith("很抱歉让您久等了")

    def test_callback_recorded_closes_with_the_handbook_thanks(self) -> None:
        """R8: the callback confirmation ends with 感谢您的来电，欢迎您随时来电。"""
        assert text("callback-recorded").endswith("感谢您的来电，欢迎您随时来电。")

    def test_agent_introduces_company_and_self_on_a_callback(self) -> None:
        """R8: the agent placing a callback is told to give the company name and their own number first."""
        said = text("callback-dialing")
        assert "公司名称" in said and "工号" in said

    def test_name_prompt_asks_after_the_tone(self) -> None:
        """R3: the name step asks for the caller's name after the tone and says how to finish."""
        said = text(NAME_PROMPT)
        assert "提示音后说出您的姓名" in said and "井号键" in said

    def test_closing_question_is_the_handbook_line(self) -> None:
        """R8: closing-more is exactly the rulebook's 请问您还有其他问题吗？"""
        assert text(CLOSING_MORE_PROMPT) == "请问您还有其他问题吗？"

    @pytest.mark.parametrize("name", ENGINE_PROMPTS)
    def test_polite_you(self, name: str) -> None:
        """Prompts address the listener as 您, never the informal 你."""
        assert "你" not in text(name)
