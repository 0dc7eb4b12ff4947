"""The A/B swap, the one place that knows what exchanging the two answers does: to a pair, to its label, to
probability or logit columns, to the views of a scored pair (--tta), and to training batches (--swap_augment: each
battle trained on one side or the other, at random).

A and B exchange; every other class (tie) stays where it is.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from torch.utils.data import Sampler

VIEWS = ("", "_swapped")  # the scored views of a pair (oof.csv's logit column suffixes): as given, A and B swapped


def label_order(n_labels: int) -> list[int]:
    """Column order that swaps A and B in [..., labels] probabilities or logits (its own inverse)."""
    return [1, 0, *range(2, n_labels)]


def swap_label(label: int | None) -> int | None:
    """0 (A won) <-> 1 (B won); a tie (2) or no label stays."""
    return {0: 1, 1: 0}.get(label, label)


def swap_columns(values):
    """[..., labels] probabilities or logits (an array, or one row as a list) with A's and B's columns exchanged."""
    if isinstance(values, list):
        return [values[i] for i in label_order(len(values))]
    return values[..., label_order(values.shape[-1])]


def swap_pair(pair):
    """The same battle with A's and B's answers exchanged and its label swapped (`arena.data.Pair.swapped`)."""
    return replace(pair, response_a=pair.response_b, response_b=pair.response_a, label=swap_label(pair.label))


def swap_augment(pairs: list, probs: list[list[float]] | None = None):
    """Training pairs, then every pair with A and B swapped (label swapped): rows [n, 2n) are the swaps of rows
    [0, n), of which `RandomSwapSampler` draws one side per battle and epoch. Teacher probabilities, when given,
    follow with A's and B's
    columns exchanged. Returns (pairs, probs)."""
    swapped_probs = None if probs is None else probs + [swap_columns(p) for p in probs]
    return pairs + swapped(pairs), swapped_probs


def swapped(pairs: list) -> list:
    """Every pair swapped: what --tta scores after the pairs themselves (`views` puts the two side by side)."""
    return [swap_pair(p) for p in pairs]


def views(scores: np.ndarray, n: int) -> np.ndarray:
    """[2n, labels] scores of n pairs then of the same pairs swapped -> [n, 2 views, labels], the swapped view's
    columns mapped back to the original A/B order."""
    return np.stack([scores[:n], swap_columns(scores[n:])], axis=1)


def average_swapped(probs: np.ndarray, n: int) -> np.ndarray:
    """[2n, labels] probabilities of n pairs, then of the same pairs swapped -> [n, labels]: the swapped ones mapped
    back to the original A/B order, then averaged."""
    return views(probs, n).mean(axis=1)


class RandomSwapSampler(Sampler):
    """Each battle once per epoch, in the order `base` gives the originals, as it is or swapped: the dataset's rows
    [0, n) are the originals and [n, 2n) their swaps (`swap_augment`). A seeded coin per battle picks its side in
    even epochs and the other side in odd ones, so about half of every batch is swapped and two epochs show both.

    Batching a battle beside its own swap (the earlier design) made the A/B part of the gradient cancel within the
    pair: batches without a tie then had gradient norms mostly under 1.5 and batches with one 2.5-10, so clipping at
    max_grad_norm 1 down-weighted the ties and the model stopped predicting them (docs/BENCHMARKS.md)."""

    def __init__(self, base: Sampler, n: int, seed: int):
        self.base, self.n, self.epoch = base, n, 0
        self.sides = np.random.default_rng(seed).integers(0, 2, n)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        flip = self.epoch % 2
        for i in self.base:
            yield i + self.n * int(self.sides[i] ^ flip)
