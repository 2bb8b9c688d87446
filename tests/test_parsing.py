"""parse_answer: only a clear answer becomes a label; everything else is invalid (None)."""

import pytest

from hatelens.backends.parsing import final_channel, parse_answer
from hatelens.errors import ConfigError

RAW_HARMONY = (
    "<|channel|>analysis<|message|>The text is not hateful... but it could be hate<|end|>"
    '<|start|>assistant<|channel|>final<|message|>{"classification": "normal"}<|return|>'
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (RAW_HARMONY, "normal"),
        # the same answer without the closing token (generation stopped on it)
        (RAW_HARMONY.removesuffix("<|return|>"), "normal"),
        # a constrained final message
        ("<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|channel|>final <|constrain|>json"
         '<|message|>{"classification": "hate"}<|end|>', "hate"),
        ("<|channel|>final<|message|>Hateful<|return|>", "hate"),
        # decoded with special tokens skipped
        ('analysisThe user says the group is vermin. That is hate, not normal.assistantfinal{"classification":"hate"}',
         "hate"),
        ("analysisIt reads as hateful, but it quotes someone to criticise them.assistantfinalnormal", "normal"),
        ('final{"classification": "normal"}', "normal"),
    ],
)  # fmt: skip
def test_gpt_oss_final_channel_is_the_answer(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "<|channel|>analysis<|message|>This is clearly hate speech. Answer: hate",  # cut off while reasoning
        "<|channel|>analysis<|message|>hate<|end|>",
        "analysisThe answer is hate. So: hate",
        '<|channel|>commentary<|message|>{"classification": "hate"}<|end|>',
    ],
)
def test_reasoning_without_a_final_channel_is_invalid(text):
    assert parse_answer(text) is None


def test_final_channel_returns_only_the_answer():
    assert final_channel(RAW_HARMONY) == '{"classification": "normal"}'
    assert final_channel("plain hate") == "plain hate"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"classification": "hate"}', "hate"),
        ('{"classification": "Not hateful"}', "normal"),
        ('{"Classification": "NORMAL", "reason": "a recipe"}', "normal"),
        ('{"label": "hateful"}', "hate"),
        ('{"label": 1}', "hate"),
        ('{"classification": "hate speech"}', "hate"),
        ('```json\n{"classification": "normal"}\n```', "normal"),
        ('```\n{"classification": "hate"}\n```', "hate"),
        ('  {"classification": "hate", "label": "hate"}  ', "hate"),
    ],
)
def test_json_answers(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{"classification": "maybe"}',
        '{"classification": true}',
        '{"classification": ["hate"]}',
        '{"reason": "hate"}',
        '{"classification": "hate", "label": "normal"}',  # two keys that disagree
        '{"classification": "hate"',  # broken JSON is not read as words
        '{"classification": "hate"} because it insults a group',  # not one JSON object
        '["hate"]',
    ],
)
def test_unclear_json_is_invalid(text):
    assert parse_answer(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hate", "hate"),
        ("Hate", "hate"),
        ("  hateful.\n", "hate"),
        ("HATEFUL", "hate"),
        ("normal", "normal"),
        ("Normal, but hateful undertones", "normal"),  # the first word is the answer
        ("hate: it dehumanises a group", "hate"),
        ("Not hate", "normal"),
        ("not hate speech", "normal"),
        ("Not hateful", "normal"),  # an accepted spelling of normal, never "hateful"
        ("non-hateful", "normal"),
        ('"hate"', "hate"),
        ("**Hateful**", "hate"),
        ("Answer: normal", "normal"),
        ("**Answer:** hate", "hate"),
        ("Label: 'not hateful'", "normal"),
        ("hate<|return|>", "hate"),
    ],
)
def test_plain_words_at_the_start(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "This is hate",  # label not at the start
        "I think it is hateful",
        "hatefully worded",  # no word boundary after "hateful"
        "normally fine",
        "non-hate",
        "not",
        "1",
        "asdf qwerty",
        "The answer is: normal",
        "Answer:",
        "hate/normal",  # the options echoed back, not an answer
        "normal|hate",
    ],
)
def test_anything_else_is_invalid(text):
    assert parse_answer(text) is None


def test_prompt_label_words():
    words = {"hate": "Offensive", "normal": "Acceptable"}
    assert parse_answer("offensive", words) == "hate"
    assert parse_answer("Acceptable.", words) == "normal"
    assert parse_answer('{"classification": "Offensive"}', words) == "hate"
    assert parse_answer("hate", words) == "hate"  # default spellings still count
    assert parse_answer("offensive", None) is None


def test_label_words_must_name_the_two_labels():
    with pytest.raises(ConfigError, match=r"label_words key 'toxic' is not 'hate' or 'normal'"):
        parse_answer("hate", {"toxic": "yes"})


@pytest.mark.parametrize("text", ["hate or normal.", "Normal or hate", "hate, or normal", "**hate** or normal"])
def test_echoed_options_are_invalid_not_the_first_word(text):
    assert parse_answer(text) is None


def test_a_label_followed_by_other_words_is_still_an_answer():
    assert parse_answer("hate or at least very hostile") == "hate"
