"""Prompt rendering in tokens under a budget: the one function that both training and inference use.

A template (a text file in prompts/) holds `{conversation_a}` and `{conversation_b}`; each conversation is
rendered turn by turn as

    User: <prompt turn>
    Bot A: <answer turn>

with a blank line between turns. The label token (" A", " B" or " Tie") follows the template's last character.

Every piece (template parts, role headers, texts) is tokenized once and the token lists are concatenated, so the
budget is exact: when a pair does not fit in `max_length` tokens (label included), the earliest turns are dropped
first, from both conversations alike, then the longest texts of the last turn are shortened (their ends cut), and
the label is never cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena.data import DataError, Pair

DEFAULT_LABELS = (" A", " B", " Tie")
EMPTY_TEXT = "(empty)"  # what a null or empty turn renders as
USER_HEADER, BOT_HEADER, TURN_SEPARATOR = "User:", "\nBot {side}:", "\n\n"
# A text longer than this many characters per budget token is cut before tokenizing: it cannot fit anyway,
# and this keeps a 200,000-character answer from costing more than a budget-sized one.
CHARS_PER_TOKEN_CAP = 16
RENDER_CHUNK = 1024  # pairs per tokenizer batch


def read_template(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the prompt template ({e})") from None


def encode_pieces(tokenizer, pieces: list[str]) -> list[list[int]]:
    """Token ids of text pieces as they read in the middle of a prompt.

    Tokenizing a piece on its own can differ from how it reads in context (sentencepiece tokenizers add a word
    boundary at the start of every call). So each piece is tokenized behind an anchor ("\\n" before a piece that
    starts with a letter, "a" before one that starts with white space) and the anchor's tokens are removed; where
    the anchor merges with the piece, the piece is tokenized alone. Special-token text inside a piece stays text."""
    anchors = ["a" if p[:1].isspace() else "\n" for p in pieces]
    anchor_ids = {a: _encode(tokenizer, [a])[0] for a in set(anchors)}
    encoded = _encode(tokenizer, [a + p for a, p in zip(anchors, pieces)])
    out, retry = [], []
    for i, (anchor, ids) in enumerate(zip(anchors, encoded)):
        head = anchor_ids[anchor]
        if ids[: len(head)] == head:
            out.append(ids[len(head) :])
        else:
            out.append(None)
            retry.append(i)
    if retry:
        for i, ids in zip(retry, _encode(tokenizer, [pieces[i] for i in retry])):
            out[i] = ids
    return out


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """`tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]`. A fast tokenizer with
    no truncation or padding set is called directly, without offsets and the per-text conversion to Python objects:
    the same ids for less CPU time (docs/BENCHMARKS.md)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation or backend.padding or not hasattr(backend, "encode_batch_fast"):
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    before, backend.encode_special_tokens = backend.encode_special_tokens, True
    try:
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
    finally:
        backend.encode_special_tokens = before


def label_token_ids(tokenizer, labels) -> list[int]:
    """First token of each label; stops with a clear error if two labels start with the same token."""
    if len(labels) != 3:
        raise DataError(f"need exactly 3 labels (A wins, B wins, tie), got {list(labels)!r}")
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

    def __init__(self, tokenizer, template: str, labels=DEFAULT_LABELS, max_length: int = 3072):
        template = template.rstrip("\n")
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
        bos = tokenizer("", add_special_tokens=True)["input_ids"]
        bos = bos[:1] if bos and bos[0] == tokenizer.bos_token_id else []
        self.head = bos + (_encode(tokenizer, [head])[0] if head else [])
        self.middle, self.tail, self.user, bot_a, bot_b, self.sep = encode_pieces(
            tokenizer,
            [middle, tail, USER_HEADER, BOT_HEADER.format(side="A"), BOT_HEADER.format(side="B"), TURN_SEPARATOR],
        )
        self.bot = (bot_a, bot_b)
        # tokens a one-turn pair needs besides its three texts, the label included
        self.overhead = len(self.head) + len(self.middle) + len(self.tail) + 2 * len(self.user) + len(bot_a) + len(bot_b) + 1
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
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            texts = [
                " " + (text or EMPTY_TEXT)[:cap]
                for pair in part
                for turn in zip(pair.prompt, pair.response_a, pair.response_b)
                for text in turn
            ]
            encoded = iter(encode_pieces(self.tokenizer, texts))
            for pair in part:
                yield self._fit([(next(encoded), next(encoded), next(encoded)) for _ in pair.prompt])

    def _fit(self, turns: list[tuple[list[int], list[int], list[int]]]) -> Rendered:
        user, (bot_a, bot_b), sep = len(self.user), self.bot, len(self.sep)
        base = self.overhead - 2 * user - len(bot_a) - len(bot_b)  # template, BOS and label
        costs = [2 * (user + len(p)) + len(bot_a) + len(bot_b) + len(a) + len(b) for p, a, b in turns]
        total = full_length = base + sum(costs) + 2 * sep * (len(turns) - 1)
        start = 0
        while total > self.max_length and start < len(turns) - 1:
            total -= costs[start] + 2 * sep
            start += 1
        kept = turns[start:]
        shortened = 0
        if total > self.max_length:  # one turn left and still too long: shorten its longest texts
            p, a, b = kept[0]
            room = self.max_length - self.overhead
            lp, la, lb = fit_lengths([len(p), len(a), len(b)], [2, 1, 1], room)
            shortened = (lp < len(p)) + (la < len(a)) + (lb < len(b))
            kept = [(p[:lp], a[:la], b[:lb])]
        ids = list(self.head)
        for side, part in ((0, self.middle), (1, self.tail)):
            for j, turn in enumerate(kept):
                if j:
                    ids += self.sep
                ids += self.user + turn[0] + self.bot[side] + turn[1 + side]
            ids += part
        return Rendered(ids, len(turns), start, shortened, full_length)


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
