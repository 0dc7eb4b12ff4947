"""Preparing data fast: the tokenizer's work per pair is bounded, the direct fast-tokenizer path gives the same ids
as the tokenizer's own call, and the data-preparation benchmark runs (bench/prepare_data.py --smoke)."""

import json

import pytest

from arena.data import Pair
from arena import prompts
from arena.prompts import CHARS_PER_TOKEN_CAP, DEFAULT_LABELS, Renderer, read_template
from conftest import check, run_cli

TEXTS = ["a plain sentence.", " leading space", "<|im_end|> special-token text </s> <s> [INST]", "東京 😀 \ufffd",
         "\n\n  indented\tcode()", "", " " * 40, "word " * 3000]


def test_a_huge_answer_hands_the_tokenizer_no_more_than_a_capped_text(local_tokenizer, monkeypatch):
    tokenizer = local_tokenizer("chatml")
    renderer = Renderer(tokenizer, read_template("prompts/two_conversations.txt"), DEFAULT_LABELS, 3072)
    handed = []
    encode = prompts._encode

    def counting_encode(tokenizer, texts, *args):  # the real encoder, counting the characters it is given
        handed.append(sum(map(len, texts)))
        return encode(tokenizer, texts, *args)

    monkeypatch.setattr(prompts, "_encode", counting_encode)
    chars = {}
    for size in (2_000, 200_000, 2_000_000):
        handed.clear()
        rendered = renderer.render(Pair("1", ("q",), ("START " + "word " * (size // 5),), ("b",), 0))
        chars[size] = sum(handed)
        assert len(rendered.ids) + 1 <= 3072 and rendered.shortened_texts == (size > 2_000)
        assert tokenizer.decode(rendered.ids).count("START") == 1
    cap = CHARS_PER_TOKEN_CAP * 3072
    assert chars[2_000] < 2_100
    assert cap < chars[200_000] < cap + 100  # the answer is cut to the cap before tokenizing
    assert chars[2_000_000] == chars[200_000]


@pytest.mark.parametrize("name", ["chatml", "sentencepiece"])
def test_direct_fast_tokenizer_path_gives_the_tokenizers_own_ids(local_tokenizer, name):
    tokenizer = local_tokenizer(name)
    expected = tokenizer(TEXTS, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    tokenizer.backend_tokenizer.encode_special_tokens = False
    assert prompts._encode(tokenizer, TEXTS) == expected
    assert tokenizer.backend_tokenizer.encode_special_tokens is False  # the tokenizer is left as it was
    assert tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"] != expected[2]  # the texts hold special tokens


def test_prepare_benchmark_smoke(local_tokenizer, tmp_path):
    local_tokenizer("chatml").save_pretrained(tmp_path / "tokenizer")
    result = check(run_cli("bench/prepare_data.py", "--smoke", "--tokenizer", tmp_path / "tokenizer",
                           "--output", tmp_path / "unused.json"))
    figures = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert figures["rows"] == 500 and figures["render"]["tokens"] > 500 * 100
    assert figures["read"]["rows_per_s"] > 0 and figures["render"]["rows_per_s"] > 0
    assert not (tmp_path / "unused.json").exists()
