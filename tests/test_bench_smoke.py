"""The benchmark scripts' CPU smoke modes, run as a user runs them, on the tiny model: their result files have the
GPU results' keys and sane values. Nothing here asserts a speed (a CPU run on a tiny model says nothing about it)."""

import json

import numpy as np

import pytest

from bench.train_speed import longest_fitting
from conftest import check, run_cli, run_script

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`

PATHS = ("unsloth", "baseline")


@pytest.fixture(scope="module")
def train_smoke(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("train-smoke")
    check(run_script("bench/train_speed.py", "--cpu_smoke", "--model", tiny_model, "--find_max_len",
                     "--results", out / "train.json", "--max_len_results", out / "max_len.json"))
    return out


def test_train_smoke_measures_both_paths_on_the_same_batches(train_smoke):
    records = json.loads((train_smoke / "train.json").read_text())
    assert [r["seq_len"] for r in records] == [128, "mix"]
    for r in records:
        assert r["device"].startswith("cpu")
        for path in PATHS:
            assert r[f"{path}_tokens_per_s"] > 0 and 0 < r[f"{path}_peak_gib"] < 64 and r[f"{path}_mfu"] > 0
            d = r[path]
            assert d["tokens_measured"] == sum(d["step_tokens"][d["warmup_steps"]:]) > 0
            assert d["trainer_num_tokens"] == sum(d["step_tokens"])  # the trainer trained on the planned rows
            assert len(d["step_seconds"]) == d["warmup_steps"] + d["steps"] - 1
            assert d["weights"] == "nf4" and d["params_total"] > d["params_body"] > 0
        assert r["unsloth"]["unsloth_imported"] and not r["baseline"]["unsloth_imported"]
        assert r["unsloth"]["dtype"] == r["baseline"]["dtype"] == "float32"  # both compute alike, whatever the CPU
        assert r["same_batches"]  # identical token ids in identical batches on both paths
        # same weights, same 4-bit quantization, LoRA B = 0: the first step's loss is the same model's loss
        assert r["first_loss_rel_diff"] < 1e-3
        assert r["speedup"] > 0 and r["memory_ratio"] > 0
    mix = records[1]["unsloth"]["row_tokens"]
    assert mix["min"] < mix["max"] <= 256  # the mix really mixes lengths, under its budget
    assert records[1]["unsloth"]["how"]["loader"].startswith("arena.loading.load_model")


def test_train_smoke_finds_the_longest_row(train_smoke):
    [record] = json.loads((train_smoke / "max_len.json").read_text())
    for path in PATHS:
        assert record[f"{path}_max_len"] == 512 and record[path]["stopped"] == "cap"  # nothing runs out on a CPU
        assert record[path]["trials"][0]["fits"] and record[path]["trials"][0]["peak_gib"] > 0


def test_plot_reads_the_training_results(train_smoke):
    png = train_smoke / "train.png"
    check(run_cli("bench/plot_train.py", "--results", train_smoke / "train.json", "--out", png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_infer_smoke_naive_and_ours_agree(tiny_model, tmp_path):
    out = tmp_path / "infer.json"
    check(run_cli("bench/infer_speed.py", "--cpu_smoke", "--model", tiny_model, "--results", out))
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu")
    assert result["naive_pairs_per_s"] > 0 and result["ours_pairs_per_s"] > 0 and result["speedup"] > 0
    # naive and ours agree for every weights, with and without TTA (bf16 and 8bit: on a sample scored both ways)
    assert set(result["max_abs_diff"]) == {"4bit", "4bit:tta", "bf16", "8bit"}
    assert all(diff < 1e-4 for diff in result["max_abs_diff"].values())
    assert result["max_abs_diff_pairs"]["4bit"] == 16
    assert result["best_max_tokens"]["4bit"] in (1024, 4096)
    runs = {(r["weights"], r["method"], r["tta"]): r for r in result["runs"] if r["method"] != "sweep"}
    assert len(runs) == 6
    for (weights, method, tta), r in runs.items():
        assert r["pairs_per_s"] > 0 and r["n_pairs"] == 16 and 0 < r["roofline_fraction"]
        assert r["sequences"] == 16 * (2 if tta else 1) and r["padded_tokens"] >= r["real_tokens"]
        # ours computes the logits of one position per row; naive those of every position
        assert (r["logits_positions_max"] == 1) == (method == "ours")
    assert runs[("4bit", "ours", False)]["weights_loaded"] == "nf4"
    # unsloth's CPU backend has no 8-bit path and loads 16-bit weights instead: the smoke run checks the plumbing
    # only, and says what it measured (the GPU file bench/results/infer_gpu.json records int8)
    loaded = {weights: runs[(weights, "ours", False)]["weights_loaded"] for weights in ("8bit", "bf16")}
    assert loaded == {"8bit": "float32", "bf16": "float32"}


def test_longest_fitting_doubles_then_bisects():
    tried = []

    def fits(n):
        tried.append(n)
        return n <= 5000

    result = longest_fitting(fits, 1024, 65536, 256, lambda: 1e9)
    assert result["stopped"] == "resolution" and 5000 - 256 < result["max_len"] <= 5000 < result["first_failed"]
    assert result["first_failed"] - result["max_len"] <= 256
    assert tried[:4] == [1024, 2048, 4096, 8192]  # doubling until the first failure, then bisection
    assert [t["length"] for t in result["trials"]] == tried


def test_longest_fitting_stops_at_the_cap_the_start_and_the_deadline():
    assert longest_fitting(lambda n: True, 1024, 8192, 256, lambda: 1e9)["stopped"] == "cap"
    assert longest_fitting(lambda n: True, 1024, 8192, 256, lambda: 1e9)["max_len"] == 8192
    assert longest_fitting(lambda n: False, 1024, 8192, 256, lambda: 1e9)["stopped"] == "start"
    # after one trial there is no time left for a longer (so slower) one
    result = longest_fitting(lambda n: True, 1024, 8192, 256, lambda: 0.0)
    assert result["stopped"] == "time" and [t["length"] for t in result["trials"]] == [1024]


def test_adapter_dtype_benchmark_runs_both_modes_on_the_same_data(tiny_model, demo_data, tmp_path):
    out = tmp_path / "dtype.json"
    check(run_cli("bench/adapter_dtype.py", "--steps", "2", "--repeats", "1", "--model", tiny_model,
                     "--train_file", demo_data / "train.csv", "--results", out))
    result = json.loads(out.read_text())
    assert set(result["median_seconds"]) == {"bf16", "float32"}
    assert all(len(s) == 1 and s[0] > 0 for s in result["train_seconds"].values())
    # the same model and batches; only the adapters' dtype differs, so two steps give nearly the same loss
    losses = result["train_loss"]
    assert abs(losses["bf16"] - losses["float32"]) < 1e-2 * losses["float32"]
    assert result["adapter_dtype"] == {"bf16": "bfloat16", "float32": "float32"}  # two modes, not one run twice


def test_quality_smoke_trains_every_variant_and_reports_the_bayes_limit(tmp_path):
    out = tmp_path / "quality"
    check(run_cli("bench/quality.py", "--smoke", "--out", out, "--results", out / "quality.json",
                     "--plot", out / "quality.png"))
    result = json.loads((out / "quality.json").read_text())
    assert result["smoke"] and result["steps"] == 3 and result["seeds"] == [0]
    assert [v["name"] for v in result["variants"]] == ["token", "label", "label+swap", "+distill(run)",
                                                       "+distill(truth)"]
    for v in result["variants"]:
        [run] = v["per_seed"]
        assert 0 < run["bayes_limit"] < 1.0986 and run["gap"] == pytest.approx(run["log_loss"] - run["bayes_limit"])
        assert v["log_loss"]["median"] == run["log_loss"] and run["n"] == 60
    # the distilled runs read their teachers: the label+swap run's predictions on every row, and truth.csv
    teacher = out / "seed0" / "label+swap" / "teacher" / "train_predictions.csv"
    assert len(teacher.read_text().splitlines()) == 1 + 300
    for name, file in (("+distill(run)", teacher), ("+distill(truth)", out / "data" / "truth.csv")):
        config = (out / "seed0" / name / "config.yaml").read_text()
        assert f"- {file}" in config and "swap_augment: true" in config and "loss: label" in config
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_head_benchmark_pairs_the_arms_by_seed(tiny_model, demo_data, tmp_path):
    results = tmp_path / "label_head.json"
    check(run_cli("bench/label_head.py", "--model", tiny_model, "--seeds", "0", "--runs", tmp_path / "runs",
                     "--results", results, "--", "--max_steps", "2", "--train_file", demo_data / "train.csv"))
    result = json.loads(results.read_text())
    assert [(r["arm"], r["seed"]) for r in result["runs"]] == [("base", 0), ("label_head", 0)]
    losses = {r["arm"]: r["log_loss"] for r in result["runs"]}
    assert result["summary"]["label_head"]["paired_diff"] == [losses["label_head"] - losses["base"]]
    assert (tmp_path / "runs" / "label_head-s0" / "label_head.safetensors").exists()
    assert not (tmp_path / "runs" / "base-s0" / "label_head.safetensors").exists()


def test_real_model_benchmark_reports_every_arm_against_the_prior(real_model, tmp_path):
    """bench/real_model.py at its smallest on the shipped battles: the arms without a model, one SFT arm, its TTA
    and the classification-head baseline (one step each), then the table with paired differences and the picture."""
    from bench.real_model import paired

    arms = ["prior", "longer", "sft token", "tta", "class head"]
    result = run_cli("bench/real_model.py", "--data", "data/llmeval2/train.csv", "--model", real_model,
                     "--arms", *arms, "--seeds", "0", "--train_rows", "8", "--heldout_rows", "8", "--max_steps", "1",
                     "--batch_size", "2", "--max_length", "320", "--runs", tmp_path / "runs",
                     "--results", tmp_path / "real.json", "--plot", tmp_path / "real.png")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "real.json").read_text())
    assert [a["name"] for a in report["arms"]] == arms and (tmp_path / "real.png").stat().st_size > 0
    for a in report["arms"]:
        assert 0 < a["log_loss"]["median"] < 10 and 0 <= a["accuracy"]["median"] <= 1
        assert ("vs prior" in a) == (a["name"] != "prior")  # every arm's per-row losses were found
        if "vs prior" in a:
            d = a["vs prior"]
            assert d["low"] <= d["mean"] <= d["high"]
    assert "| class head |" in result.stdout
    d = paired(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4))
    assert d["mean"] == 1.5 and 0 <= d["low"] < 1.5 < d["high"] <= 3


def test_heads_benchmark_chooses_each_arms_learning_rate_on_validation_rows(tiny_model, tmp_path):
    """bench/heads.py at its smallest, on the tiny model and the shipped battles: two arms, two learning rates on seed
    0, the chosen one on seed 1, two sizes from one run's checkpoints; the report's runs, paired differences and
    picture."""
    result = run_cli("bench/heads.py", "--model", tiny_model, "--max_length", "256", "--datasets", "llmeval2",
                     "--arms", "label loss", "class head", "--seeds", "0", "1", "--sizes", "4", "8", "--learning_rates", "1e-4", "1e-3",
                     "--validation_rows", "4", "--heldout_rows", "8", "--runs", tmp_path / "runs",
                     "--results", tmp_path / "heads.json", "--plot", tmp_path / "heads.png")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "heads.json").read_text())
    store = report["store"]
    assert len(store) == 6 and (tmp_path / "heads.png").stat().st_size > 0
    for arm in ("label loss", "class head"):
        lrs = [float(k.split("/lr")[1].split("/")[0]) for k in store if f"/{arm}/" in k and k.endswith("seed0")]
        losses = [np.mean([store[f"llmeval2/{arm}/lr{lr:g}/seed0"]["sizes"][s]["validation"]["log_loss"]
                           for s in ("4", "8")]) for lr in sorted(lrs)]
        lr = report["learning_rates"][f"llmeval2/{arm}"]
        assert lr == sorted(lrs)[int(np.argmin(losses))]  # the validation rows chose it
        assert f"llmeval2/{arm}/lr{lr:g}/seed1" in store
        runs = [r for r in report["runs"] if r["arm"] == arm]
        assert sorted((r["rows_seen"], r["seed"]) for r in runs) == [(4, 0), (4, 1), (8, 0), (8, 1)]
        assert all(r["learning_rate"] == lr for r in runs)
    assert {r["arm"] for r in report["runs"]} == {"prior", "longer", "label loss", "class head"}
    pairs = {(p["arm"], p["reference"], p["rows_seen"]) for p in report["paired"]}
    assert ("label loss", "class head", 8) in pairs and ("class head", "prior", 4) in pairs
    assert all(p["low"] <= p["mean"] <= p["high"] for p in report["paired"])
    assert all(p["accuracy_low"] <= p["accuracy_mean"] <= p["accuracy_high"] for p in report["paired"])
    accuracy = {(r["arm"], r["rows_seen"]): [] for r in report["runs"]}
    for r in report["runs"]:
        accuracy[r["arm"], r["rows_seen"]].append(r["accuracy"])
    for p in report["paired"]:  # the per-row hits averaged over seeds: the difference of the mean accuracies
        gap = np.mean(accuracy[p["arm"], p["rows_seen"]]) - np.mean(accuracy[p["reference"], p["rows_seen"]])
        assert p["accuracy_mean"] == pytest.approx(gap)
    assert "| llmeval2 | 8 | class head |" in result.stdout


def test_heads_benchmark_cosine_schedule_trains_a_run_per_size(tiny_model, tmp_path):
    """--schedule cosine: each size is a run of its own that decays to zero. Without warm-up, a one-step cosine run
    takes the full rate, as the constant one does, so the two agree at one step; at two steps the cosine run's second
    step is at half the rate, so they differ."""
    common = ["--model", tiny_model, "--max_length", "256", "--datasets", "llmeval2", "--arms", "label loss",
              "--seeds", "0", "--sizes", "4", "8", "--learning_rates", "1e-2", "--warmup_steps", "0",
              "--validation_rows", "4", "--heldout_rows", "8", "--runs", tmp_path / "runs"]
    probs = {}
    for schedule in ("constant", "cosine"):
        result = run_cli("bench/heads.py", *common, "--schedule", schedule, "--results", tmp_path / f"{schedule}.json",
                         "--plot", tmp_path / f"{schedule}.png")
        assert result.returncode == 0, result.stderr[-2000:]
        run = json.loads((tmp_path / f"{schedule}.json").read_text())["store"]["llmeval2/label loss/lr0.01/seed0"]
        probs[schedule] = {size: np.array(run["sizes"][size]["heldout"]["probs"]) for size in ("4", "8")}
    cosine = tmp_path / "runs" / "llmeval2" / "label-loss" / "lr0.01" / "seed0-cosine"
    assert (cosine / "steps1").is_dir() and (cosine / "heldout-8.csv").is_file()  # beside its runs, not the constant's
    np.testing.assert_allclose(probs["cosine"]["4"], probs["constant"]["4"], atol=1e-5)
    assert np.abs(probs["cosine"]["8"] - probs["constant"]["8"]).max() > 1e-4
    refused = run_cli("bench/heads.py", *common, "--schedule", "cosine", "--results", tmp_path / "constant.json")
    assert refused.returncode != 0 and "other settings" in refused.stderr and "Traceback" not in refused.stderr
