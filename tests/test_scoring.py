"""Scoring with the real tiny model through unsloth (4-bit, inference mode): batching, last position, swap TTA."""

import math

import bitsandbytes as bnb
import numpy as np
import pytest
import torch

from arena.data import read_pairs
from arena.prompts import DEFAULT_LABELS, Renderer, read_template
from arena.scoring import (default_budget, log_loss, probabilities, score_logits, score_pairs, split_by_tokens,
                           token_budget_batches)
from conftest import same_result_tolerance

TEMPLATE = read_template("prompts/two_conversations.txt")


@pytest.fixture(scope="module")
def setup(inference_model, demo_data):
    model, tokenizer = inference_model
    renderer = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 512)
    pairs = read_pairs(str(demo_data / "train.csv"))[:30]
    return model, renderer, pairs


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def setup_in_dtype(request, tiny_model, demo_data):
    """The tiny model loaded through unsloth in 4-bit with --dtype float32 (the CPU default) or bfloat16 (emulated
    where the CPU has no bf16)."""
    from unsloth import FastLanguageModel

    from arena.loading import load_model

    model, tokenizer = load_model(str(tiny_model), 512, dtype=request.param)
    FastLanguageModel.for_inference(model)
    renderer = Renderer(tokenizer, TEMPLATE, DEFAULT_LABELS, 512)
    return getattr(torch, request.param), model, renderer, read_pairs(str(demo_data / "train.csv"))[:30]


def reference_probs(model, renderer, pair):
    """One row, no padding, the full logits tensor: softmax over the label ids at the last prompt position."""
    ids = torch.tensor([renderer.render(pair).ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    return torch.softmax(logits[renderer.label_ids].float(), -1).double().numpy()


def test_the_model_computes_in_the_dtype_asked_for(setup_in_dtype):
    dtype, model, _, _ = setup_in_dtype
    assert model.dtype == dtype
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears and {m.compute_dtype for m in linears} == {dtype}
    # bitsandbytes' AVX512-BF16 repacking (bf16 math whatever the dtype) stays off, as unsloth's loader sets it
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in linears)
    assert model.get_output_embeddings().weight.dtype == dtype


def test_batched_probabilities_equal_unbatched_scoring(setup_in_dtype):
    dtype, model, renderer, pairs = setup_in_dtype
    lengths = [len(r.ids) for r in renderer.render_many(pairs)]
    batches = token_budget_batches(lengths, 4096)
    assert any(len({lengths[i] for i in b}) > 1 for b in batches)  # some batches really are padded
    batched = score_pairs(model, renderer, pairs, max_tokens=4096)
    one_by_one = np.stack([reference_probs(model, renderer, p) for p in pairs])
    assert batched.std() > 0.1  # the random model's probabilities are far from uniform, so the match means something
    np.testing.assert_allclose(batched, one_by_one, atol=same_result_tolerance(dtype))
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-9)


def test_scoring_computes_logits_for_the_last_position_only(setup):
    model, renderer, pairs = setup
    from torch.nn.modules.module import register_module_forward_hook

    from arena.label_logits import LabelRows

    shapes, head = [], model.get_output_embeddings()
    hook = register_module_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))
                                        if m is head or isinstance(m, LabelRows) else None)
    try:
        score_pairs(model, renderer, pairs, max_tokens=4096)
    finally:
        hook.remove()
    # the label rows at the last position, [batch, 1, labels]: never [batch, length, ...] nor the whole vocabulary
    assert shapes and all(shape[1:] == (1, len(renderer.label_ids)) for shape in shapes)


def test_tta_maps_the_swapped_probabilities_back(setup):
    model, renderer, pairs = setup
    plain = score_pairs(model, renderer, pairs, max_tokens=4096)
    swapped = score_pairs(model, renderer, [p.swapped() for p in pairs], max_tokens=4096)
    tta = score_pairs(model, renderer, pairs, max_tokens=4096, tta=True)
    # P(A wins) of a pair is P(B wins) of the swapped pair
    expected = (plain + swapped[:, [1, 0, 2]]) / 2
    np.testing.assert_allclose(tta, expected, atol=1e-6)
    assert np.abs(tta - plain).max() > 1e-3  # the swap really changed something
    tta_of_swapped = score_pairs(model, renderer, [p.swapped() for p in pairs], max_tokens=4096, tta=True)
    np.testing.assert_allclose(tta_of_swapped, tta[:, [1, 0, 2]], atol=1e-6)


def test_token_budget_batches_cover_every_row_within_budget():
    lengths = [5, 300, 17, 17, 120, 2000, 64, 9]
    batches = token_budget_batches(lengths, 512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 512


def test_split_by_tokens_balances_processes():
    lengths = [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
    shards = split_by_tokens(lengths, 3)
    assert sorted(i for s in shards for i in s) == list(range(10))
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= 10


def test_log_loss_matches_known_values():
    labels = np.array([0, 1, 2])
    assert log_loss(np.full((3, 3), 1 / 3), labels) == pytest.approx(math.log(3))
    assert log_loss(np.eye(3), labels) == pytest.approx(0.0, abs=1e-12)
    assert log_loss(np.eye(3)[[1, 2, 0]], labels) == pytest.approx(-math.log(np.finfo(float).eps), rel=1e-6)


def test_the_default_scoring_budget_is_the_devices(setup):
    """No --score_max_tokens: 1024 tokens a batch on a CPU (bigger batches cost page faults there), 16384 on a GPU."""
    model, renderer, pairs = setup
    assert (default_budget(torch.device("cpu")), default_budget(torch.device("cuda"))) == (1024, 16384)
    shapes = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    try:
        default = score_logits(model, renderer, pairs, max_tokens=None)
        cpu_shapes, shapes[:] = list(shapes), []
        gpu = score_logits(model, renderer, pairs, max_tokens=16384)
    finally:
        hook.remove()
    assert all(rows * width <= 1024 or rows == 1 for rows, width in cpu_shapes) and len(shapes) < len(cpu_shapes)
    np.testing.assert_allclose(default, gpu, atol=same_result_tolerance(torch.float32))


def test_score_logits_keeps_the_label_logits_of_each_view(setup):
    model, renderer, pairs = setup
    logits = score_logits(model, renderer, pairs, max_tokens=4096, tta=True)
    assert logits.shape == (len(pairs), 2, 3)
    for pair, row in zip(pairs, logits):
        ids = torch.tensor([renderer.render(pair).ids])
        with torch.no_grad():
            expected = model(input_ids=ids).logits[0, -1][renderer.label_ids].double().numpy()
        np.testing.assert_allclose(row[0], expected, rtol=1e-5, atol=1e-5)
    swapped = score_logits(model, renderer, [p.swapped() for p in pairs], max_tokens=4096)
    np.testing.assert_allclose(logits[:, 1], swapped[:, 0][:, [1, 0, 2]], atol=1e-5)  # mapped back to A/B order
    np.testing.assert_allclose(probabilities(logits), score_pairs(model, renderer, pairs, 4096, tta=True), atol=1e-12)
    assert probabilities(logits, 2.0).max() < probabilities(logits).max()  # a temperature above 1 softens
