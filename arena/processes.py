"""This process's place among those `accelerate launch` / torchrun started (one process without a launcher)."""

from __future__ import annotations

import torch


def process_state():
    """accelerate's PartialState. Without a GPU, accelerate joins the process group only when asked for CPU (gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
