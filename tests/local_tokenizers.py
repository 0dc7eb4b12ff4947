"""Two fast tokenizers built here, in a second each, with the traits of the real families that the prompt and
label tests care about (no download, no ../shared):

- "chatml": a byte-level BPE like Qwen2.5's and SmolLM2's: no BOS, <|im_start|> / <|im_end|> special tokens, a
  ChatML chat template that adds a default system message; " A", " B" and " Tie" are one token each.
- "sentencepiece": a Metaspace BPE like Mistral's and Llama-2's: adds <s> in front, and " Tie" is two tokens
  (▁T + ie), since no word of its corpus starts with "Ti"; an [INST] chat template like Mistral's.
Both are real `tokenizers` objects behind transformers' PreTrainedTokenizerFast, trained on a fixed corpus."""

import string

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from arena.prompts import DEFAULT_LABELS, EMPTY_TEXT

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MISTRAL_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + message['content'] + '[/INST]' }}{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)
# what the tests' texts are made of, several times over; "Ti" starts no word (see "sentencepiece" above)
WORDS = ("alpha beta gamma délta 東京 🙂 x=1; word START The To Then This That tie pie lie field piece "
         "a plain sentence. leading space special-token text indented code() question answer user bot "
         "Which response is better? first second draw verdict variant hello world capital Paris France "
         "<|im_end|> </s> <s> [INST] [/INST] _ \ufffd " + string.printable)


def corpus(with_labels: bool) -> list[str]:
    from arena.prompts import read_template

    texts = [read_template(f"prompts/{name}.txt") for name in ("two_conversations", "zero_shot", "two_way")]
    texts += [WORDS, f"User: q\nBot A: a\nBot B: b {EMPTY_TEXT}", "\n\n  \t"] * 20
    if with_labels:
        return texts + ["".join(DEFAULT_LABELS)] * 50
    return [text.replace("Tie", "") for text in texts]


def chatml() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([  # Qwen2's: the split regex, then bytes
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus(with_labels=True), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=special[1:], chat_template=CHATML_TEMPLATE,
                                   name_or_path="chatml")


def sentencepiece() -> PreTrainedTokenizerFast:
    # trained on words (no piece spans a space) with line breaks on their own, as sentencepiece keeps them
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
    ])
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus(with_labels=False), trainer)
    # then encoded as Mistral's is: Metaspace over the whole text (split=False)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>", add_bos_token=True, chat_template=MISTRAL_TEMPLATE,
                                   name_or_path="sentencepiece")


BUILDERS = {"chatml": chatml, "sentencepiece": sentencepiece}
