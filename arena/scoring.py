"""Scoring: the logits at the last prompt position over the label tokens (" A", " B", " Tie"), and from them
P(A wins), P(B wins), P(tie) (their softmax; with a temperature, see arena/calibration.py).

Rows are sorted by length and batched by a token budget (rows x padded length), left-padded so that the last
position is every row's last real token, and the model computes logits for that position only
(`logits_to_keep=1`): never a [batch, length, vocab] tensor. With several processes, the rows are split across
them balanced by token count and the results gathered, so every process returns the full, ordered array.
The label logits are kept (`score_logits`), not only the probabilities, so that a temperature can be fitted to them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from arena.data import Pair
from arena.io import atomic_open
from arena.label_logits import label_output
from arena.prompts import Renderer
from arena.swap import swapped, views


# tokens per scoring batch (rows x padded length) when --score_max_tokens is not given, by device type: on a CPU
# larger batches only add padding and page faults (docs/BENCHMARKS.md, "Where a CPU's time goes")
CPU_BUDGET, GPU_BUDGET = 1024, 16384


def default_budget(device: torch.device) -> int:
    return CPU_BUDGET if device.type == "cpu" else GPU_BUDGET


def token_budget_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Row indices in batches, longest first, each batch's rows x longest row <= max_tokens (at least one row)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[current[0]] > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def split_by_tokens(lengths: list[int], parts: int) -> list[list[int]]:
    """Row indices for each of `parts` processes, balanced by token count (longest rows first to the lightest)."""
    shards, load = [[] for _ in range(parts)], [0] * parts
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        k = min(range(parts), key=lambda k: (load[k], k))
        shards[k].append(i)
        load[k] += lengths[i]
    return [sorted(s) for s in shards]


def model_fingerprint(path: str, *settings) -> str:
    """Identifies a model folder's weights (names, sizes, times) together with the settings that change scores:
    what `BatchCache` names its batches by."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else []
    stats = [(os.path.basename(f), os.path.getsize(f), os.path.getmtime(f)) for f in files]
    return json.dumps([os.path.abspath(path) if os.path.isdir(path) else path, stats, *settings])


class BatchCache:
    """Finished scoring batches on disk, so that an interrupted run can resume where it stopped: one .npy file of
    label logits per batch, named by a hash of what it scored (the model's fingerprint, the label ids and the
    batch's tokens)."""

    def __init__(self, folder: str, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint
        self.reused = self.computed = 0
        os.makedirs(folder, exist_ok=True)

    def path(self, seqs: list[list[int]]) -> str:
        digest = hashlib.sha256(self.fingerprint.encode())
        for seq in seqs:
            digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
        return os.path.join(self.folder, digest.hexdigest()[:32] + ".logits.npy")

    def get(self, seqs: list[list[int]]) -> np.ndarray | None:
        path = self.path(seqs)
        if not os.path.exists(path):
            return None
        self.reused += 1
        return np.load(path)

    def put(self, seqs: list[list[int]], logits: np.ndarray) -> None:
        self.computed += 1
        with atomic_open(self.path(seqs), "wb") as f:
            np.save(f, logits)


@torch.inference_mode()
def score_ids(
    model, seqs: list[list[int]], label_ids: list[int], pad_id: int, max_tokens: int | None, progress: bool = True,
    cache: BatchCache | None = None,
) -> np.ndarray:
    """Label logits [len(seqs), len(label_ids)] (float64 of the float32 logits) for token sequences, in their order;
    batches of at most `max_tokens` (None: the device's default_budget)."""
    device = next(model.parameters()).device
    max_tokens = max_tokens or default_budget(device)
    out = np.zeros((len(seqs), len(label_ids)))
    bar = tqdm(total=len(seqs), desc="scoring", unit="pair", disable=not progress or len(seqs) == 0)
    with label_output(model, label_ids):  # the output layer: the label rows (or the label head) alone
        for batch in token_budget_batches([len(s) for s in seqs], max_tokens):
            done = cache.get([seqs[i] for i in batch]) if cache is not None else None
            if done is not None:
                out[batch] = done
                bar.update(len(batch))
                continue
            width = len(seqs[batch[0]])
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(seqs[i])
                input_ids[row, width - n :] = torch.tensor(seqs[i])
                mask[row, width - n :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=1,
                use_cache=False,
            ).logits[:, -1, :]
            out[batch] = logits.double().cpu().numpy()
            if cache is not None:
                cache.put([seqs[i] for i in batch], out[batch])
            bar.update(len(batch))
    bar.close()
    return out


def score_logits(
    model, renderer: Renderer, pairs: list[Pair], max_tokens: int | None, tta: bool = False, state=None,
    cache: BatchCache | None = None,
) -> np.ndarray:
    """Label logits [len(pairs), views, labels] in the pairs' order: one view, or two with `tta` (the second: the
    pair with A and B swapped, its columns mapped back to the original A/B order). `state` (an accelerate
    PartialState) splits the work across processes; `cache` keeps finished batches on disk."""
    seqs = pair_sequences(renderer, pairs, tta)
    pad_id = pad_token_id(renderer.tokenizer)
    world, rank = (state.num_processes, state.process_index) if state is not None else (1, 0)
    if world == 1:
        logits = score_ids(model, seqs, renderer.label_ids, pad_id, max_tokens, cache=cache)
    else:
        from accelerate.utils import gather_object

        mine = split_by_tokens([len(s) for s in seqs], world)[rank]
        local = score_ids(model, [seqs[i] for i in mine], renderer.label_ids, pad_id, max_tokens, rank == 0, cache)
        logits = np.zeros((len(seqs), len(renderer.label_ids)))
        for i, row in gather_object(list(zip(mine, local.tolist()))):
            logits[i] = row
    return views(logits, len(pairs)) if tta else logits[:, None, :]


def score_pairs(
    model, renderer: Renderer, pairs: list[Pair], max_tokens: int | None, tta: bool = False, state=None,
    cache: BatchCache | None = None,
) -> np.ndarray:
    """Probabilities [len(pairs), labels] in the pairs' order: `probabilities(score_logits(...))`, with `tta` the
    average of the pair's and the swapped pair's."""
    return probabilities(score_logits(model, renderer, pairs, max_tokens, tta, state, cache))


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """[n, views, labels] label logits -> [n, labels] probabilities: the softmax of logits / temperature in each
    view, averaged over the views."""
    scaled = torch.from_numpy(np.asarray(logits, dtype=np.float64) / temperature)
    return torch.softmax(scaled, dim=-1).mean(dim=1).numpy()


def pair_sequences(renderer: Renderer, pairs: list[Pair], tta: bool = False) -> list[list[int]]:
    """The prompt token ids of every pair; with `tta`, followed by those of every pair with A and B swapped."""
    seqs = [r.ids for r in renderer.render_many(pairs)]
    if tta:
        seqs += [r.ids for r in renderer.render_many(swapped(pairs))]
    return seqs


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass log loss as Kaggle scores it: rows renormalised, clipped at machine epsilon."""
    p = probs / probs.sum(axis=1, keepdims=True)
    p = np.clip(p, np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps)
    return float(-np.mean(np.log(p[np.arange(len(labels)), labels])))


def class_prior(train_labels: np.ndarray, n_rows: int, n_labels: int) -> np.ndarray:
    """[n_rows, n_labels]: every row predicted with the training labels' class frequencies (add-one, so no class
    has probability 0), the floor a model must beat."""
    counts = np.bincount(train_labels, minlength=n_labels) + 1.0
    return np.tile(counts / counts.sum(), (n_rows, 1))


def metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "log_loss": log_loss(probs, labels),
        "accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
        "n": int(len(labels)),
    }
