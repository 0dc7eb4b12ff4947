"""Prompt rendering in tokens under a budget: the one function that both training and inference use.

A template (a text file in prompts/) holds `{conversation_a}` and `{conversation_b}`; each conversation is
rendered turn by turn as

    User: <prompt turn>
    Bot A: <answer turn>

with a blank line between turns. The label token (" A", " B" or " Tie") follows the template's last character.

Every piece (template parts, role headers, texts) is tokenized once and the token lists are concatenated, so the
budget is exact: when a pair does not fit in `max_length` tokens (label included), the earliest turns are dropped
first, from both conversations alike, then the longest texts of the last turn are shortened (their ends cut), and
the label is never cut. A text is tokenized together with the line breaks that follow it, as it reads in the whole
prompt (Qwen's and Llama-3's tokenizers merge "?\n\n" into one token), so a prompt that is not cut has the ids
the whole text tokenizes to.

With `chat_template`, the prompt is the one user message of the tokenizer's chat template, followed by the
generation prompt (the assistant's header), and the label follows that; the template's tokens count in the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena.data import Pair
from arena.errors import DataError

DEFAULT_LABELS = (" A", " B", " Tie")
DEFAULT_MAX_LENGTH = 3072  # the token budget per row, label included, when neither a flag nor the run sets one
EMPTY_TEXT = "(empty)"  # what a null or empty turn renders as
USER_HEADER, BOT_HEADER, TURN_SEPARATOR = "User:", "\nBot {side}:", "\n\n"
# A text longer than this many characters per budget token is cut before tokenizing: it cannot fit anyway,
# and this keeps a 200,000-character answer from costing more than a budget-sized one.
CHARS_PER_TOKEN_CAP = 16
RENDER_CHUNK = 1024  # pairs per tokenizer batch
TEXT_WEIGHTS = (2, 1, 1)  # a turn's prompt text shows in both conversations, each answer in one


def read_template(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the prompt template ({e})") from None


def encode_pieces(tokenizer, pieces: list[str], split_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of text pieces as they read in the middle of a prompt.

    Tokenizing a piece on its own can differ from how it reads in context (sentencepiece tokenizers add a word
    boundary at the start of every call). So each piece is tokenized behind an anchor ("\\n" before a piece that
    starts with a letter, "a" before one that starts with white space) and the anchor's tokens are removed; where
    the anchor merges with the piece, the piece is tokenized alone. Special-token text inside a piece stays text
    unless `split_special_tokens` is False (for the chat template's own text)."""
    anchors = ["a" if p[:1].isspace() else "\n" for p in pieces]
    anchor_ids = {a: _encode(tokenizer, [a])[0] for a in set(anchors)}
    encoded = _encode(tokenizer, [a + p for a, p in zip(anchors, pieces)], split_special_tokens)
    out, retry = [], []
    for i, (anchor, ids) in enumerate(zip(anchors, encoded)):
        head = anchor_ids[anchor]
        if ids[: len(head)] == head:
            out.append(ids[len(head) :])
        else:
            out.append(None)
            retry.append(i)
    if retry:
        for i, ids in zip(retry, _encode(tokenizer, [pieces[i] for i in retry], split_special_tokens)):
            out[i] = ids
    return out


def _encode(tokenizer, texts: list[str], split_special_tokens: bool = True) -> list[list[int]]:
    """`tokenizer(texts, add_special_tokens=False, split_special_tokens=...)["input_ids"]`. A fast tokenizer with
    no truncation or padding set is called directly, without offsets and the per-text conversion to Python objects:
    the same ids for less CPU time (docs/BENCHMARKS.md)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation or backend.padding or not hasattr(backend, "encode_batch_fast"):
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=split_special_tokens)["input_ids"]
    before, backend.encode_special_tokens = backend.encode_special_tokens, split_special_tokens
    try:
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
    finally:
        backend.encode_special_tokens = before


def label_token_ids(tokenizer, labels) -> list[int]:
    """First token of each label; stops with a clear error if two labels start with the same token."""
    if len(labels) not in (2, 3):
        raise DataError(f"need 3 labels (A wins, B wins, tie) or 2 (A wins, B wins: two-way data), "
                        f"got {list(labels)!r}")
    encoded = encode_pieces(tokenizer, list(labels))
    shown = ", ".join(f"{label!r} -> {tokenizer.convert_ids_to_tokens(ids)}" for label, ids in zip(labels, encoded))
    if any(not ids for ids in encoded):
        raise DataError(f"a label encodes to no tokens: {shown}")
    first = [ids[0] for ids in encoded]
    if len(set(first)) != len(first):
        raise DataError(f"the labels' first tokens are not distinct, so they cannot be told apart: {shown}")
    return first


@dataclass(frozen=True)
class Rendered:
    ids: list[int]  # the prompt's tokens, without the label
    turns: int  # turns in the pair
    dropped_turns: int  # earliest turns left out to fit the budget
    shortened_texts: int  # texts of the kept turns whose end was cut
    full_length: int  # tokens the whole pair needs, label included (a text is counted up to the character cap)


class Renderer:
    """Renders Pairs to token ids for one tokenizer, template, label set and budget."""

    def __init__(
        self, tokenizer, template: str, labels=DEFAULT_LABELS, max_length: int = DEFAULT_MAX_LENGTH,
        chat_template: bool = False,
    ):
        template = template.strip() if chat_template else template.rstrip("\n")
        for name in ("{conversation_a}", "{conversation_b}"):
            if template.count(name) != 1:
                raise DataError(f"the prompt template must contain {name} exactly once")
        head, rest = template.split("{conversation_a}")
        if "{conversation_b}" not in rest:
            raise DataError("the prompt template must show {conversation_a} before {conversation_b}")
        middle, tail = rest.split("{conversation_b}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.label_ids = label_token_ids(tokenizer, labels)
        if chat_template:
            before, after = chat_wrapping(tokenizer)
            head, tail, bos = before + head, tail + after, []
        else:
            bos = tokenizer("", add_special_tokens=True)["input_ids"]
            bos = bos[:1] if bos and bos[0] == tokenizer.bos_token_id else []
        # The white space before a header goes with the text before it (see the module docstring): `follow`
        # holds what follows a prompt text, an answer of an earlier turn, and the last turn's answers A and B.
        follow_prompt, bot_a = split_space(BOT_HEADER.format(side="A"))
        bot_b = split_space(BOT_HEADER.format(side="B"))[1]
        follow_answer, user = split_space(TURN_SEPARATOR + USER_HEADER)
        follow_a, middle = split_space(middle)
        follow_b, tail = split_space(tail)
        self.follow = (follow_prompt, follow_answer, follow_a, follow_b)
        self.head = bos + (_encode(tokenizer, [head], not chat_template)[0] if head else [])
        self.tail = encode_pieces(tokenizer, [tail], not chat_template)[0] if tail else []
        self.middle, self.user, bot_a, bot_b = encode_pieces(tokenizer, [middle, user, bot_a, bot_b])
        self.bot = (bot_a, bot_b)
        self.follow_ids = dict(zip(self.follow, encode_pieces(tokenizer, list(self.follow))))
        self.base = len(self.head) + len(self.middle) + len(self.tail) + 1  # the template, BOS and the label
        # tokens a one-turn pair needs besides its three texts (without the white space after them)
        self.overhead = self.base + 2 * len(self.user) + len(bot_a) + len(bot_b) + sum(
            w * len(ids) for w, ids in zip(TEXT_WEIGHTS, self._last_follows())
        )
        if self.overhead > max_length:
            raise DataError(f"max_length {max_length} is too small for this template: it needs {self.overhead} tokens")

    def render(self, pair: Pair) -> Rendered:
        return self.render_many([pair])[0]

    def render_many(self, pairs: list[Pair]) -> list[Rendered]:
        return list(self.iter_render(pairs))

    def iter_render(self, pairs: list[Pair], chunk: int = RENDER_CHUNK):
        """Renders pairs one chunk at a time: a chunk's texts go to the tokenizer in one batch (a fast tokenizer
        encodes a batch on all CPU cores), and memory holds one chunk's tokens, not the whole dataset's."""
        cap = CHARS_PER_TOKEN_CAP * self.max_length
        follow_prompt, follow_answer, follow_a, follow_b = self.follow
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            texts = []
            for pair in part:
                last = len(pair.prompt) - 1
                for j, turn in enumerate(zip(pair.prompt, pair.response_a, pair.response_b)):
                    follows = (follow_prompt, *((follow_a, follow_b) if j == last else (follow_answer,) * 2))
                    texts += [" " + (text or EMPTY_TEXT)[:cap] + after for text, after in zip(turn, follows)]
            encoded = iter(encode_pieces(self.tokenizer, texts))
            for pair in part:
                yield self._fit([(next(encoded), next(encoded), next(encoded)) for _ in pair.prompt])

    def _fit(self, turns: list[tuple[list[int], list[int], list[int]]]) -> Rendered:
        """`turns`: each turn's three texts' tokens, each with the white space that follows it."""
        user, (bot_a, bot_b) = len(self.user), self.bot
        costs = [2 * (user + len(p)) + len(bot_a) + len(bot_b) + len(a) + len(b) for p, a, b in turns]
        total = full_length = self.base + sum(costs)
        start = 0
        while total > self.max_length and start < len(turns) - 1:
            total -= costs[start]
            start += 1
        kept = turns[start:]
        shortened = 0
        if total > self.max_length:  # one turn left and still too long: shorten its longest texts
            follows = self._last_follows()
            texts = [ids[: max(len(ids) - len(after), 0)] for ids, after in zip(kept[0], follows)]  # less the space
            room = self.max_length - self.overhead
            cut = fit_lengths([len(t) for t in texts], TEXT_WEIGHTS, room)
            shortened = sum(n < len(t) for n, t in zip(cut, texts))
            kept = [tuple(ids if n == len(t) else t[:n] + after
                          for ids, t, n, after in zip(kept[0], texts, cut, follows))]
        ids = list(self.head)
        for side, part in ((0, self.middle), (1, self.tail)):
            for turn in kept:
                ids += self.user + turn[0] + self.bot[side] + turn[1 + side]
            ids += part
        return Rendered(ids, len(turns), start, shortened, full_length)

    def _last_follows(self) -> list[list[int]]:
        """The white space tokens after the last turn's prompt, answer A and answer B."""
        follow_prompt, _, follow_a, follow_b = self.follow
        return [self.follow_ids[follow_prompt], self.follow_ids[follow_a], self.follow_ids[follow_b]]


def split_space(piece: str) -> tuple[str, str]:
    """(the white space a piece starts with, the rest)."""
    rest = piece.lstrip()
    return piece[: len(piece) - len(rest)], rest


CHAT_PLACEHOLDER = "\x00arena-prompt\x00"


def chat_wrapping(tokenizer) -> tuple[str, str]:
    """The chat template's text before and after one user message, with the generation prompt at the end."""
    name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{name}: the tokenizer has no chat template, so --chat_template cannot be used")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_PLACEHOLDER}], tokenize=False, add_generation_prompt=True
    )
    if text.count(CHAT_PLACEHOLDER) != 1:
        raise DataError(f"{name}: its chat template changes the message text, so the prompt cannot be wrapped in it")
    before, after = text.split(CHAT_PLACEHOLDER)
    return before, after


def fit_lengths(lengths: list[int], weights: list[int], room: int) -> list[int]:
    """Cuts the longest lengths down to one common cap so that sum(weight * length) <= room (water-filling)."""
    if sum(w * n for w, n in zip(weights, lengths)) <= room:
        return list(lengths)
    lo, hi = 0, max(lengths)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(w * min(n, mid) for w, n in zip(weights, lengths)) <= room:
            lo = mid
        else:
            hi = mid - 1
    return [min(n, lo) for n in lengths]


def training_columns(renderer: Renderer, pairs: list[Pair]) -> dict[str, list[list[int]]]:
    """The training rows: `input_ids` is the prompt then the label's first token; `labels` is -100 everywhere but
    that token, so it is the only token that carries loss (trl uses a given `labels` column as it is)."""
    input_ids, labels = [], []
    for rendered, pair in zip(renderer.render_many(pairs), pairs):
        label = renderer.label_ids[pair.label]
        input_ids.append(rendered.ids + [label])
        labels.append([-100] * len(rendered.ids) + [label])
    return {"input_ids": input_ids, "labels": labels}
