"""tools/merge_adapter.py on the tiny model: the merged 16-bit folder scores through `infer.py --model` with the
run's template, labels and budget, and its probabilities equal base + adapter's up to the 16-bit rounding of the
weights.

The comparison is in 16-bit (`--load_in_4bit false` on both sides): on a CPU unsloth merges only into the base's
16-bit weights, and loading the export in 4-bit would quantize base + adapter anew, a different model. The merged
file holds base + adapter rounded to 16-bit (fp16 here, bf16 on a CPU with native bf16). The reference is computed
here from the run itself: base + adapter in float32 (peft's merge), every weight rounded to the file's dtype and
back; scoring those weights is the same float32 computation as scoring the file, so the two agree to 1e-5, the
suite's float32 tolerance; against base + adapter unrounded, the merged model is then within the effect of that
rounding on the same rows, plus 1e-5 (on these rows about 7e-4 in probability with fp16)."""

import json

import numpy as np
import pytest
import torch

from arena.run_folder import read_config
from arena.data import read_pairs
from arena.prompts import Renderer, read_template
from arena.loading import load_model
from arena.scoring import score_pairs
from conftest import check, read_probabilities, run_cli, same_result_tolerance

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`


def test_merged_export_scores_as_base_plus_adapter(trained_run, demo_data, tmp_path):
    merged = tmp_path / "merged"
    check(run_cli("tools/merge_adapter.py", trained_run, merged, "--load_in_4bit", "false"))
    for name in ("prompt.txt", "config.yaml", "calibration.json"):
        assert (merged / name).read_bytes() == (trained_run / name).read_bytes()
    assert not (merged / "adapter_config.json").exists()  # a plain model folder, no peft at load time
    dtype = getattr(torch, json.loads((merged / "config.json").read_text())["dtype"])
    assert dtype in (torch.float16, torch.bfloat16)

    data = demo_data / "test.csv"
    out = tmp_path / "merged.csv"
    check(run_cli("infer.py", "--model", merged, "--load_in_4bit", "false", "--data_file", data,
                     "--output_file", out, "--no_calibration"))  # the model's own probabilities
    from_file = read_probabilities(out)

    run = read_config(trained_run)
    model, tokenizer = load_model(str(trained_run), run["max_length"], load_in_4bit=False)
    model.eval()
    renderer = Renderer(tokenizer, read_template(trained_run / "prompt.txt"), run["labels"], run["max_length"])
    pairs = read_pairs(str(data))
    with torch.no_grad():
        unrounded = score_pairs(model, renderer, pairs, max_tokens=16384)
        model = model.merge_and_unload()
        for param in model.parameters():
            param.data = param.data.to(dtype).float()
        rounded = score_pairs(model, renderer, pairs, max_tokens=16384)
    merged_probs = np.array([from_file[p.id] for p in pairs])

    # the same weights, prompts and computation; hence within the rounding's effect (+ 1e-5) of base + adapter
    np.testing.assert_allclose(merged_probs, rounded, atol=1e-5)
    # and that effect is 16-bit rounding, not another model (measured about 7e-4 with fp16)
    np.testing.assert_allclose(rounded, unrounded, atol=same_result_tolerance(dtype))
