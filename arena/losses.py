"""Training losses on the label token, and the trl trainer that computes them (`--loss`, `--teacher_file`).

- `token`: trl's next-token cross-entropy over the whole vocabulary at the label position (the seed recipe; the
  trainer's own loss, with unsloth's fused or chunked kernels).
- `label`: the cross-entropy over the label tokens' logits only, a softmax over len(label_ids) logits: what the
  metric scores.
- with soft labels (teacher probabilities, `--teacher_file`): alpha * label CE + (1 - alpha) * T^2 *
  KL(teacher || student), both distributions over the label logits at temperature T (the teacher's probabilities p
  become softmax(log p / T)).

The label logits come from arena/label_logits.py (the function scoring uses too); no [batch, length, vocab] tensor
is ever built.
"""

from __future__ import annotations

import unsloth  # noqa: F401  (first: unsloth patches trl's SFTTrainer, which ArenaTrainer extends)

import torch
import torch.nn.functional as F
from accelerate.data_loader import SeedableRandomSampler
from torch.utils.data import RandomSampler
from transformers.trainer_pt_utils import BatchRebalanceSampler
from trl import SFTTrainer

from arena.errors import DataError
from arena.label_head import load_label_head_weights, save_label_head
from arena.label_logits import trained_label_logits, trained_position_logits
from arena.swap import RandomSwapSampler

LOSSES = ("token", "label")
SOFT_LABELS = "soft_labels"  # the dataset column of teacher probabilities


def check_loss_settings(loss: str, alpha: float, temperature: float, has_teacher: bool) -> None:
    if loss not in LOSSES:
        raise DataError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if has_teacher and loss != "label":
        raise DataError("--teacher_file distills over the label logits: add --loss label")
    if not 0 <= alpha <= 1:
        raise DataError(f"--distill_alpha must be between 0 and 1, got {alpha}")
    if temperature <= 0:
        raise DataError(f"--distill_temperature must be positive, got {temperature}")


def label_loss(
    logits: torch.Tensor, targets: torch.Tensor, soft: torch.Tensor | None = None, alpha: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-row loss [N]: cross-entropy over the label logits; with teacher probabilities `soft` [N, K],
    alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T)."""
    hard = F.cross_entropy(logits, targets, reduction="none")
    if soft is None:
        return hard
    t = temperature
    teacher = torch.softmax(torch.log(soft.to(logits.dtype)) / t, dim=-1)
    student = torch.log_softmax(logits / t, dim=-1)
    kl = (torch.special.xlogy(teacher, teacher) - teacher * student).sum(dim=-1)
    return alpha * hard + (1 - alpha) * t * t * kl


class SoftLabelCollator:
    """The trainer's collator, plus the batch's teacher probabilities [rows, K] under `soft_labels`."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collator(examples)
        batch[SOFT_LABELS] = torch.tensor([e[SOFT_LABELS] for e in examples], dtype=torch.float32)
        return batch


class ArenaTrainer(SFTTrainer):
    """trl's SFTTrainer (as unsloth patches it, on CPU and GPU) with `args.loss`, soft labels from a
    `soft_labels` column, `args.swap_augment`'s battles on a random side each, and the model's `--label_head`
    (applied in either loss, kept float32, saved with the adapter and in every checkpoint). Settings: `arena.config.TrainConfig`."""

    def __init__(self, *args, label_ids: list[int], **kwargs):
        if label_head_of(kwargs["model"]) is not None and kwargs["args"].loss == "token":
            # the token loss with a head computes logits from each batch's earliest trained position on, which for
            # one packed row (padding-free, as unsloth batches on GPU) would be nearly the whole row
            if kwargs["args"].padding_free:
                raise DataError("--label_head with --loss token trains on padded batches: leave out --padding_free, "
                                "or train with --loss label")
            kwargs["args"].padding_free = False
        head = label_head_of(kwargs["model"])
        kept = None if head is None else {k: v.detach().clone() for k, v in head.state_dict().items()}
        super().__init__(*args, **kwargs)
        if head is not None:  # trl casts a quantized model's trainable weights to bf16: the head stays float32
            for param in head.parameters():
                param.data = param.data.float()
            head.load_state_dict(kept)
        self.label_ids = list(label_ids)
        if SOFT_LABELS in (self.train_dataset.column_names or []):
            self.data_collator = SoftLabelCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if SOFT_LABELS not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, SOFT_LABELS]  # keep the column for the collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        soft = inputs.pop(SOFT_LABELS, None)
        unwrapped = self.accelerator.unwrap_model(model)
        head = label_head_of(unwrapped)
        if self.args.loss == "token" and head is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        if self.args.loss == "token":
            logits, targets = trained_position_logits(model, inputs, unwrapped)
            per_row = F.cross_entropy(logits, targets, reduction="none")
        else:
            logits, targets = trained_label_logits(model, inputs, self.label_ids, unwrapped)
            per_row = label_loss(logits, targets, soft, self.args.distill_alpha, self.args.distill_temperature)
        # as trl's own loss: num_items_in_batch counts the label tokens of every rank and accumulation step
        count = len(per_row) if num_items_in_batch is None else num_items_in_batch
        loss = per_row.sum() / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, {"logits": logits}) if return_outputs else loss

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        head = label_head_of(self.model)
        if head is not None:
            save_label_head(head, output_dir or self.args.output_dir, self.model.config)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        head = label_head_of(self.model)
        if head is not None:
            load_label_head_weights(head, resume_from_checkpoint, self.model.config)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self.args.swap_augment:
            return super()._get_train_sampler(dataset)
        n = len(dataset) // 2
        base = super()._get_train_sampler(dataset.select(range(n)))
        if isinstance(base, BatchRebalanceSampler):
            raise DataError("--swap_augment needs a sampler of rows: use train_sampling_strategy random, "
                            "sequential or group_by_length")
        if type(base) is RandomSampler:  # what accelerate does to a plain RandomSampler it can see
            base = SeedableRandomSampler(data_source=base.data_source, data_seed=self.args.data_seed)
        return RandomSwapSampler(base, n, self.args.seed)


def label_head_of(model):
    return getattr(model, "label_head", None)
