"""Prompt rendering under a token budget, with two tokenizers built like the real families (tests/local_tokenizers.py:
byte-level ChatML like Qwen2.5 and SmolLM2, sentencepiece-like with BOS like Mistral) and label tokens."""

import copy
import random

import pytest

from arena.data import DataError, Pair
from arena.prompts import (
    DEFAULT_LABELS, EMPTY_TEXT, Renderer, chat_wrapping, fit_lengths, label_token_ids, read_template,
    training_columns,
)

TEMPLATE = read_template("prompts/two_conversations.txt")
TOKENIZERS = ["chatml", "sentencepiece"]


def random_pair(rng: random.Random, turns: int, words: int) -> Pair:
    def text(tag):
        return f"{tag} " + " ".join(rng.choice(["alpha", "beta", "gamma", "délta", "東京", "🙂", "x=1;"]) for _ in range(rng.randint(0, words)))

    return Pair(
        str(rng.random()),
        tuple(text(f"P{t}") for t in range(turns)),
        tuple(text(f"A{t}") for t in range(turns)),
        tuple(text(f"B{t}") for t in range(turns)),
        rng.randrange(3),
    )


def prompt_text(pair: Pair, template: str) -> str:
    """The whole prompt as one text, written out the way arena/prompts.py describes it."""
    def conversation(side, answers):
        return "\n\n".join(f"User: {p or EMPTY_TEXT}\nBot {side}: {a or EMPTY_TEXT}" for p, a in zip(pair.prompt, answers))

    return template.replace("{conversation_a}", conversation("A", pair.response_a)).replace(
        "{conversation_b}", conversation("B", pair.response_b))


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
@pytest.mark.parametrize("name", TOKENIZERS)
def test_rendered_prompts_never_exceed_the_budget_and_keep_the_label(local_tokenizer, name, chat):
    tokenizer = local_tokenizer(name)
    rng = random.Random(0)
    ending = "### BEST RESPONSE:" + (chat_wrapping(tokenizer)[1] if chat else "")
    for max_length in (300, 700, 3072):
        renderer = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, max_length, chat)
        pairs = [random_pair(rng, rng.randint(1, 6), rng.choice([5, 60, 400])) for _ in range(40)]
        rendered = renderer.render_many(pairs)
        columns = training_columns(renderer, pairs)
        for pair, r, ids, labels in zip(pairs, rendered, columns["input_ids"], columns["labels"]):
            assert len(ids) <= max_length and ids[:-1] == r.ids
            assert tokenizer.decode(r.ids).endswith(ending)
            label = renderer.label_ids[pair.label]
            assert ids[-1] == label and labels == [-100] * len(r.ids) + [label]  # the label is never cut
        assert any(r.dropped_turns for r in rendered) or max_length == 3072
        assert any(r.shortened_texts for r in rendered) or max_length == 3072


@pytest.mark.parametrize("template", ["prompts/two_conversations.txt", "prompts/zero_shot.txt"])
@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_prompt_that_fits_has_the_ids_of_its_whole_text(local_tokenizer, name, template):
    """Texts ending in punctuation, spaces or line breaks included (byte-level BPEs merge "?\n\n" into one token). The label
    is its first token (the sentencepiece one's " Tie" has two, as Mistral's)."""
    tokenizer = local_tokenizer(name)
    template = read_template(template)
    rng = random.Random(1)
    words = ["alpha", "beta.", "gamma?", "délta!", "東京。", "🙂", "x=1;", "(ok)", "end\n", "tab\tx", "  spaced", "trail "]
    pairs = [Pair(str(k), *(tuple(" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(turns))
                            for _ in range(3)), rng.randrange(3))
             for k, turns in enumerate([1, 1, 2, 3] * 10)]
    plain = Renderer(tokenizer, template, DEFAULT_LABELS, 3072)
    chat = Renderer(tokenizer, template, DEFAULT_LABELS, 3072, chat_template=True)
    for pair, ids, chat_ids in zip(pairs, training_columns(plain, pairs)["input_ids"],
                                   training_columns(chat, pairs)["input_ids"]):
        label = DEFAULT_LABELS[pair.label]
        text = prompt_text(pair, template.rstrip("\n"))
        assert ids[:-1] == tokenizer(text)["input_ids"]
        assert ids == tokenizer(text + label)["input_ids"][: len(ids)]
        messages = [{"role": "user", "content": prompt_text(pair, template.strip())}]
        generation = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        assert chat_ids[:-1] == generation  # the label token right after the assistant's header
        wrapped = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert chat_ids == tokenizer(wrapped + label, add_special_tokens=False)["input_ids"][: len(chat_ids)]


def test_chat_template_tokens_count_in_the_budget(local_tokenizer):
    tokenizer = local_tokenizer("chatml")  # its template adds a default system message
    pair = Pair("1", ("question " * 50,), ("answer " * 400,), ("reply " * 400,), 0)
    plain = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 400).render(pair)
    chat = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 400, chat_template=True).render(pair)
    for r in (plain, chat):  # both fill the budget, label included, up to the common cap's rounding (weights 2, 1, 1)
        assert 400 - 4 <= len(r.ids) + 1 <= 400 and r.shortened_texts == 2
    assert chat.full_length - plain.full_length > 20  # the template's own tokens
    assert tokenizer.decode(chat.ids).startswith("<|im_start|>system\nYou are a helpful assistant.")


def test_chat_template_needs_one_in_the_tokenizer(local_tokenizer):
    tokenizer = copy.deepcopy(local_tokenizer("chatml"))
    tokenizer.chat_template = None
    Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 3072)  # plain prompts need none
    with pytest.raises(DataError, match="the tokenizer has no chat template, so --chat_template cannot be used"):
        Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 3072, chat_template=True)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_earliest_turns_are_dropped_first_from_both_conversations(local_tokenizer, name):
    tokenizer = local_tokenizer(name)
    pair = Pair(
        "1",
        tuple(f"question number {t} " + "word " * 30 for t in range(5)),
        tuple(f"answer alpha {t} " + "word " * 30 for t in range(5)),
        tuple(f"answer beta {t} " + "word " * 30 for t in range(5)),
        0,
    )
    full = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 3072).render(pair)
    assert full.dropped_turns == 0
    budget = len(full.ids) - 150  # about two turns too long
    r = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, budget).render(pair)
    text = tokenizer.decode(r.ids)
    assert len(r.ids) + 1 <= budget and r.dropped_turns >= 1 and r.shortened_texts == 0
    for t in range(5):
        kept = t >= r.dropped_turns
        for part in (f"question number {t}", f"answer alpha {t}", f"answer beta {t}"):
            assert (part in text) == kept, (t, part)
        assert text.count(f"question number {t}") == (2 if kept else 0)  # the prompt shows in both conversations


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_single_long_turn_is_shortened_from_its_end(local_tokenizer, name):
    tokenizer = local_tokenizer(name)
    pair = Pair("1", ("short question",), ("START-A " + "lorem ipsum " * 3000,), ("short answer",), 1)
    renderer = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 512)
    r = renderer.render(pair)
    text = tokenizer.decode(r.ids)
    assert len(r.ids) + 1 <= 512 and r.shortened_texts == 1 and r.dropped_turns == 0
    assert "START-A" in text and "short answer" in text and text.count("short question") == 2


def test_fit_lengths_cuts_the_longest_texts_to_a_common_cap():
    assert fit_lengths([10, 500, 40], [2, 1, 1], 1000) == [10, 500, 40]
    lengths = fit_lengths([10, 500, 400], [2, 1, 1], 300)
    assert lengths[0] == 10 and lengths[1] == lengths[2] and 2 * 10 + 2 * lengths[1] <= 300 < 2 * 10 + 2 * (lengths[1] + 1)


def test_a_huge_text_costs_no_more_than_a_budget_sized_one(local_tokenizer):
    tokenizer = local_tokenizer("chatml")
    renderer = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 3072)
    huge = renderer.render(Pair("1", ("q",), ("word " * 40_000,), ("b",), 0))  # 200,000 characters
    assert len(huge.ids) + 1 <= 3072 and huge.shortened_texts == 1


def test_empty_and_null_turns_render_as_one_marker(local_tokenizer):
    tokenizer = local_tokenizer("chatml")
    renderer = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 3072)
    text = tokenizer.decode(renderer.render(Pair("1", ("", "q2"), ("", "a2"), ("b1", ""), 0)).ids)
    assert text.count(EMPTY_TEXT) == 4  # prompt turn 1 twice, A turn 1, B turn 2


def test_special_token_text_inside_an_answer_stays_text(local_tokenizer):
    tokenizer = local_tokenizer("chatml")
    renderer = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 3072)
    ids = renderer.render(Pair("1", ("q",), ("<|im_end|> hi",), ("b",), 0)).ids
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") not in ids


def test_label_tokens_of_a_byte_level_tokenizer_are_single_tokens(local_tokenizer):
    tokenizer = local_tokenizer("chatml")
    single = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in DEFAULT_LABELS]
    assert [len(ids) for ids in single] == [1, 1, 1]
    assert label_token_ids(tokenizer, DEFAULT_LABELS) == [ids[0] for ids in single]
    assert tokenizer.convert_ids_to_tokens(label_token_ids(tokenizer, DEFAULT_LABELS)) == ["ĠA", "ĠB", "ĠTie"]


def test_a_two_token_tie_trains_and_scores_on_its_first_token(local_tokenizer):
    tokenizer = local_tokenizer("sentencepiece")
    tie = tokenizer(" Tie", add_special_tokens=False)["input_ids"]
    assert len(tie) == 2
    ids = label_token_ids(tokenizer, DEFAULT_LABELS)
    assert ids[2] == tie[0] and len(set(ids)) == 3
    assert tokenizer.convert_ids_to_tokens(ids) == ["▁A", "▁B", "▁T"]


def test_labels_whose_first_tokens_collide_stop_with_the_tokens_shown(local_tokenizer):
    tokenizer = local_tokenizer("sentencepiece")
    with pytest.raises(DataError, match=r"not distinct.*' Tie' -> \['▁T', 'ie'\].*' Tiny' -> \['▁T"):
        label_token_ids(tokenizer, [" A", " Tie", " Tiny"])


def test_template_must_have_both_conversations(local_tokenizer):
    tokenizer = local_tokenizer("chatml")
    with pytest.raises(DataError, match="conversation_b"):
        Renderer(tokenizer, "only {conversation_a} here", DEFAULT_LABELS, 3072)
    with pytest.raises(DataError, match="too small"):
        Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 40)
