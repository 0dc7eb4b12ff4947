"""Every product feature run once, a few steps each, and checked as the CPU tests check it: on a GPU, where unsloth
compiles, fuses the loss and packs batches (none of which a CPU run exercises), or with --cpu on tiny models.

    bash bench/gpu_check.sh          # on a GPU machine: installs the wheel kit (.whl), then this (one device call)
    bash bench/gpu_check.sh --cpu    # tiny models, float32, no kit (tests/test_gpu_check.py runs it)

Models, all random weights built here: a SmolLM2-135M-shaped Llama with tied embeddings (--cpu: a tied Llama of
the tiny preset's size), the tiny Gemma-2 preset of tools/make_random_model.py (for --chat_template), and on a GPU,
when the time allows, the Llama-3-8B shape for one feature (--loss label). The data is the demo's
(data/make_demo_data.py), a few dozen rows. Each training run checks the run folder's files, the held-out
probabilities (valid, summing to 1) and that `infer.py --adapter RUN` reproduces oof.csv within ten times the
compute dtype's resolution (1e-5 in float32, 0.1 in bfloat16; tests/conftest.py's same_result_tolerance). The
scripts run in this process by their command lines (runpy: one import of unsloth, not one per feature); the
hub-unreachable check runs infer.py in a fresh process. Every hub request is counted: HF_ENDPOINT points at a
local server that records each one and answers 404, and a feature that made one fails (trl's telemetry and
huggingface_hub's agent registry, sent from a background thread, are recorded in the reason instead).

Writes to --out: gpu_check.json (the machine, the versions, and per feature: feature, status pass|fail|skipped,
reason, seconds; rewritten after every feature) and gpu_check.log (every script's output). A failing feature does
not stop the others; one that needs a failed one fails saying so. With --resume (bench/gpu_check.sh uses it when
this process died, e.g. in a CUDA fault) the features already recorded are kept and the one that was running is
recorded as failed. Exit status: 0 when every feature passed, 3 when one did not, 2 when none could run (no
GPU without --cpu, an import failed).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.server
import json
import os
import runpy
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

RESULT_FILE, LOG_FILE = "gpu_check.json", "gpu_check.log"
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # left out: the scripts must stay off the hub alone
LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")
# requests that run in a background thread and give up quietly (trl's telemetry, huggingface_hub's agent registry):
# recorded, not failed; any other request (a model's files) makes an offline machine wait on retries
BACKGROUND_REQUESTS = ("/api/telemetry/", "/api/agent-harnesses")
SUM_TOLERANCE = 1e-6  # a written row of probabilities sums to 1 within this
# SmolLM2-135M's shape (HuggingFaceTB/SmolLM2-135M config.json): a Llama with tied input and output embeddings
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, vocab_size=49152,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)
# --cpu: the tiny preset's size (tools/make_random_model.py), tied
TINY_TIED = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.1, tie_word_embeddings=True)


class Failure(Exception):
    """A check that did not hold: the message is the reason recorded."""


# ------------------------------------------------------------------------------------------------ checks


def same_result_tolerance(dtype) -> float:
    """How far two evaluation orders of one computation (batch shapes, padding) may move a probability: ten times the
    dtype's decimal resolution (torch.finfo: float32 1e-6, bfloat16 1e-2), so 1e-5 in float32 and 0.1 in bfloat16.
    Measured on the tiny model: float32 2.3e-6, bfloat16 4.8e-3 (the GPU showed 0.05-0.06 on an 8B model in bf16).
    The tests use it too (tests/conftest.py)."""
    import torch

    return 10 * torch.finfo(dtype).resolution


def read_probabilities(path: str, n_labels: int) -> dict[str, list[float]]:
    """{id: probabilities} of a predictions file as written; a row that is not a valid distribution (numbers in
    [0, 1] summing to 1) or a header without the probability columns is a Failure."""
    if not os.path.exists(path):
        raise Failure(f"{path}: not written")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(LABEL_COLUMNS[:n_labels])
        header = reader.fieldnames or []
        if header[: n_labels + 1] != ["id", *columns] or set(header) & set(LABEL_COLUMNS) != set(columns):
            raise Failure(f"{path}: header {header}: expected id,{','.join(columns)} first and no other label column")
        out = {}
        for row in reader:
            try:
                probs = [float(row[c]) for c in columns]
            except (TypeError, ValueError):
                raise Failure(f"{path}: id {row['id']}: probabilities {[row[c] for c in columns]} are not numbers") \
                    from None
            if not all(0 <= p <= 1 for p in probs) or abs(sum(probs) - 1) > SUM_TOLERANCE:
                raise Failure(f"{path}: id {row['id']}: probabilities {probs} are not a distribution")
            out[row["id"]] = probs
    if not out:
        raise Failure(f"{path}: no rows")
    return out


def compare(got: dict[str, list[float]], expected: dict[str, list[float]], tolerance: float, what: str) -> str:
    """Checks that two {id: probabilities} hold the same ids and agree within `tolerance`; returns a one-line
    summary (the largest difference), raises Failure naming the worst row otherwise."""
    if set(got) != set(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise Failure(f"{what}: ids differ: {len(missing)} missing (e.g. {missing[:1]}), {len(extra)} extra "
                      f"(e.g. {extra[:1]})")
    worst, worst_id = -1.0, None
    for row_id, probs in expected.items():
        if len(got[row_id]) != len(probs):
            raise Failure(f"{what}: id {row_id}: {len(got[row_id])} probabilities, expected {len(probs)}")
        diff = max(abs(a - b) for a, b in zip(got[row_id], probs))
        if not diff <= tolerance:  # also a NaN
            raise Failure(f"{what}: id {row_id}: {got[row_id]} against {probs}, max |difference| {diff:.3g} > "
                          f"tolerance {tolerance:.3g}")
        if diff > worst:
            worst, worst_id = diff, row_id
    return f"{what}: max |difference| {worst:.2g} (id {worst_id}; tolerance {tolerance:.2g}, {len(expected)} rows)"


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise Failure(reason)


# ------------------------------------------------------------------------------------------------ recording


@dataclass
class Record:
    """gpu_check.json: the machine and one entry per feature, rewritten after each change."""

    path: str
    data: dict = field(default_factory=dict)

    def entries(self) -> dict[str, dict]:
        return {e["feature"]: e for e in self.data.setdefault("features", [])}

    def set(self, feature: str, status: str, reason: str = "", seconds: float | None = None) -> None:
        entry = {"feature": feature, "status": status, "reason": reason,
                 "seconds": None if seconds is None else round(seconds, 1)}
        features = self.data.setdefault("features", [])
        at = next((i for i, e in enumerate(features) if e["feature"] == feature), None)
        if at is None:
            features.append(entry)
        else:
            features[at] = entry
        self.save()

    def save(self) -> None:
        from arena.io import write_json

        write_json(self.path, self.data)


class HubRecorder:
    """A local HTTP server standing in for the model hub (HF_ENDPOINT): it records every request, answers 404."""

    def __init__(self):
        self.requests = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                recorder.requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


class Checker:
    """Runs features in turn, each under the deadline, with its output in the log; records pass, fail or skip."""

    def __init__(self, record: Record, log: str, deadline: float | None = None, hub: HubRecorder | None = None,
                 console=None):
        self.record, self.log, self.deadline, self.hub = record, log, deadline, hub
        self.console = console or sys.stdout

    def say(self, line: str) -> None:
        print(line, file=self.console, flush=True)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def passed(self, feature: str) -> bool:
        return self.record.entries().get(feature, {}).get("status") == "pass"

    def run(self, feature: str, check, needs: tuple[str, ...] = (), needs_s: float = 0) -> bool:
        """Runs check() (it returns a summary, or raises Failure) unless already recorded; returns whether it
        passed."""
        done = self.record.entries().get(feature)
        if done and done["status"] != "running":
            return done["status"] == "pass"
        failed = [n for n in needs if not self.passed(n)]
        left = None if self.deadline is None else self.deadline - time.time()
        if failed:
            return self._end(feature, "fail", f"needs {', '.join(failed)}, which did not pass", 0.0)
        if left is not None and left < needs_s:
            return self._end(feature, "skipped", f"deadline: {left:.0f} s left, it needs about {needs_s:.0f} s", 0.0)
        self.record.set(feature, "running")
        self.say(f"==== {feature}")
        began, requests = time.time(), len(self.hub.requests) if self.hub else 0
        try:
            with output_to(self.log):
                summary = check() or ""
            asked = self.hub.requests[requests:] if self.hub else []
            blocking = [r for r in asked if not r.split()[-1].startswith(BACKGROUND_REQUESTS)]
            require(not blocking, f"asked the model hub {len(blocking)} times, e.g. {blocking[:2]}")
            status, reason = "pass", summary
            if asked:
                reason += f"; {len(asked)} background requests to the hub ({', '.join(sorted(set(asked)))})"
        except Failure as e:
            status, reason = "fail", str(e)
        except BaseException as e:  # noqa: BLE001  (any error is this feature's failure; the others still run)
            if isinstance(e, KeyboardInterrupt):
                raise
            with open(self.log, "a", encoding="utf-8") as f:
                traceback.print_exc(file=f)
            status, reason = "fail", f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
        return self._end(feature, status, reason, time.time() - began)

    def _end(self, feature: str, status: str, reason: str, seconds: float) -> bool:
        self.record.set(feature, status, reason, seconds)
        self.say(f"{feature}: {status} ({seconds:.1f} s) {reason}")
        return status == "pass"


@contextlib.contextmanager
def output_to(path: str):
    """This process's stdout and stderr (file descriptors 1 and 2: C code and subprocesses too) appended to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


# ------------------------------------------------------------------------------------------------ the product


def script(path: str, *args) -> None:
    """`python path args...` in this process (its `__main__` block, so its error handling too); a non-zero exit is a
    Failure with the script's own message."""
    saved = sys.argv
    sys.argv = [path, *map(str, args)]
    try:
        runpy.run_path(os.path.join(ROOT, path), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise Failure(f"{path} stopped: {e.code}") from None
    finally:
        sys.argv = saved
        free_memory()


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def read_csv(path: str) -> tuple[list[dict], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames)


def write_csv(path: str, rows: list[dict], header: list[str]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def log_size(path: str) -> int:
    """The log's size now, this process's output flushed first (for log_since)."""
    sys.stdout.flush()
    sys.stderr.flush()
    return os.path.getsize(path)


def log_since(path: str, offset: int) -> str:
    """What the log got since `offset` (a log_size)."""
    log_size(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read()


def build_llama(out: str, shape: dict, corpus: str) -> None:
    """A random-weight Llama of `shape` with the tokenizer tools/make_random_model.py trains and a head of the tiny
    preset's logit range, saved like a hub checkpoint (bf16 on a GPU, float32 on a CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tools.make_random_model import TINY_HEAD_STD, train_tokenizer

    tokenizer = train_tokenizer([corpus], 1024)
    shape = {"vocab_size": len(tokenizer), **shape}
    config = LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    gpu = torch.cuda.is_available()
    with torch.device("cuda" if gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16 if gpu else torch.float32)
    # the tiny preset's head range (tools/make_random_model.py): with the default init every probability is near 1/3
    # and any two scorings agree; this spreads the label logits as the tiny preset's std-0.2 head does at hidden 128
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, TINY_HEAD_STD * (128 / config.hidden_size) ** 0.5)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    del model
    free_memory()


@dataclass
class Plan:
    """Where everything goes, and the sizes: the same features on a GPU and with --cpu."""

    work: str
    cpu: bool
    rows: int = 120
    steps: int = 4
    batch: int = 4
    max_length: int = 512

    def path(self, *parts: str) -> str:
        return os.path.join(self.work, *parts)

    @property
    def data(self) -> str:
        return self.path("data")

    def model(self, name: str) -> str:
        return self.path("models", name)

    def run(self, name: str) -> str:
        return self.path("runs", name)

    def scores(self, name: str) -> str:
        return self.path("scores", name + ".csv")


class Features:
    """The features, each a method that runs the product and checks what it wrote."""

    def __init__(self, plan: Plan, log: str, hub: HubRecorder):
        self.plan, self.log, self.hub = plan, log, hub

    # ---- setup

    def data(self) -> str:
        p = self.plan
        script("data/make_demo_data.py", "--out", p.data, "--rows", p.rows, "--test_rows", 8, "--seed", 1)
        rows, _ = read_csv(os.path.join(p.data, "train.csv"))
        two_way = []  # the WSDM layout: one-turn, no ties, plain strings, a winner column
        for r in rows:
            turns = [json.loads(r[c]) for c in ("prompt", "response_a", "response_b")]
            if r["winner_tie"] == "1" or len(turns[0]) != 1:
                continue
            winner = "model_a" if r["winner_model_a"] == "1" else "model_b"
            two_way.append({"id": r["id"], "prompt": turns[0][0], "response_a": turns[1][0] or "",
                            "response_b": turns[2][0] or "", "winner": winner})
        write_csv(os.path.join(p.data, "two_way.csv"), two_way, list(two_way[0]))
        return f"{len(rows)} rows, {len(two_way)} of them in the two-way file"

    def llama(self) -> str:
        shape = TINY_TIED if self.plan.cpu else SMOLLM2_135M
        build_llama(self.plan.model("llama"), shape, os.path.join(self.plan.data, "train.csv"))
        return "SmolLM2-135M shape, tied embeddings" if not self.plan.cpu else "tiny, tied embeddings"

    def gemma2(self) -> str:
        script("tools/make_random_model.py", "--out", self.plan.model("gemma2"), "--preset", "tiny-gemma2",
               "--corpus", os.path.join(self.plan.data, "train.csv"))
        return "tiny-gemma2 preset"

    # ---- training runs

    def train(self, name: str, *flags, model: str = "llama", train_file: str = "train.csv") -> str:
        p = self.plan
        run = p.run(name)
        shutil.rmtree(run, ignore_errors=True)
        script("train_unsloth.py", "--config", "configs/demo.yaml", "--model", p.model(model),
               "--train_file", os.path.join(p.data, train_file), "--output_dir", run, "--max_steps", p.steps,
               "--warmup_steps", 1, "--per_device_train_batch_size", p.batch, "--max_length", p.max_length,
               "--logging_steps", 1, *flags)
        return run

    def check_run(self, run: str, n_labels: int = 3) -> dict[str, list[float]]:
        """The run folder's files, valid held-out probabilities for exactly the held-out rows; returns them."""
        for name in ("adapter_model.safetensors", "adapter_config.json", "config.yaml", "prompt.txt", "folds.csv",
                     "oof.csv", "metrics.json", "versions.json", "calibration.json", "base_model.json",
                     "reliability.png", "confusion.png", "subgroups.png"):
            require(os.path.exists(os.path.join(run, name)), f"{run}: no {name}")
        oof = read_probabilities(os.path.join(run, "oof.csv"), n_labels)
        held_out = {r["id"] for r in read_csv(os.path.join(run, "folds.csv"))[0] if r["fold"] == "0"}
        require(set(oof) == held_out, f"{run}/oof.csv: {len(oof)} rows, but {len(held_out)} were held out")
        with open(os.path.join(run, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        require(metrics["n"] == len(oof) and 0 <= metrics["log_loss"] < 50,
                f"{run}/metrics.json: n {metrics['n']}, log loss {metrics['log_loss']}")
        return oof

    def tolerance(self, run: str) -> float:
        import torch

        with open(os.path.join(run, "metrics.json"), encoding="utf-8") as f:
            return same_result_tolerance(getattr(torch, json.load(f)["dtype"]))

    def held_out_file(self, run: str, name: str, data_file: str = "train.csv", fold: str = "0",
                      swapped: bool = False) -> str:
        """The rows `run` held out (its folds.csv), as a file of their own; `swapped`: also each with A and B
        swapped (id + '-swapped')."""
        ids = {r["id"] for r in read_csv(os.path.join(run, "folds.csv"))[0] if r["fold"] == fold}
        rows, header = read_csv(os.path.join(self.plan.data, data_file))
        rows = [r for r in rows if r["id"] in ids]
        if swapped:
            rows += [{**r, "id": r["id"] + "-swapped", "response_a": r["response_b"], "response_b": r["response_a"],
                      "winner_model_a": r["winner_model_b"], "winner_model_b": r["winner_model_a"]} for r in rows]
        return write_csv(self.plan.path("data", name + ".csv"), rows, header)

    def infer(self, name: str, *args) -> str:
        out = self.plan.scores(name)
        script("infer.py", "--output_file", out, "--no_calibration", *args)
        return out

    def reproduces(self, run: str, n_labels: int = 3, fold: str = "0", data_file: str = "train.csv",
                   swapped: bool = False) -> str:
        """infer.py --adapter RUN on the held-out rows gives oof.csv's probabilities (the model's own, uncalibrated,
        as oof.csv has them)."""
        name = os.path.relpath(run, self.plan.path("runs")).replace(os.sep, "-")
        data = self.held_out_file(run, name + "-heldout", data_file, fold, swapped)
        out = self.infer(name, "--adapter", run, "--data_file", data)
        predictions = read_probabilities(out, n_labels)
        oof = read_probabilities(os.path.join(run, "oof.csv"), n_labels)
        values = [p for probs in oof.values() for p in probs]
        return compare({i: predictions[i] for i in oof if i in predictions}, oof, self.tolerance(run),
                       "infer.py --adapter against oof.csv") + f"; oof.csv spans {min(values):.3f}-{max(values):.3f}"

    def trained(self, name: str, *flags, model: str = "llama", expect: str = "") -> str:
        offset = log_size(self.log)
        run = self.train(name, *flags, model=model)
        if expect:
            require(expect in log_since(self.log, offset), f"the training log does not say {expect!r}")
        self.check_run(run)
        return self.reproduces(run, swapped=name == "token")

    def loss_token(self) -> str:
        return self.trained("token", "--loss", "token")

    def loss_label(self) -> str:
        return self.trained("label", "--loss", "label")

    def swap_augment(self) -> str:
        return self.trained("swap", "--swap_augment", expect="swapped rows added (--swap_augment)")

    def distill(self) -> str:
        return self.trained("distill", "--loss", "label", "--teacher_file", os.path.join(self.plan.data, "truth.csv"),
                            expect="training rows with teacher probabilities")

    def label_head(self) -> str:
        with open(os.path.join(self.plan.model("llama"), "config.json"), encoding="utf-8") as f:
            require(json.load(f).get("tie_word_embeddings"), "the llama model is not tied")
        summary = self.trained("label_head", "--label_head")
        require(os.path.exists(os.path.join(self.plan.run("label_head"), "label_head.safetensors")),
                "no label_head.safetensors")
        return summary

    def chat_template(self) -> str:
        summary = self.trained("chat", "--chat_template", model="gemma2")
        with open(os.path.join(self.plan.run("chat"), "config.yaml"), encoding="utf-8") as f:
            require("chat_template: true" in f.read(), "config.yaml does not record chat_template: true")
        return summary

    def two_way(self) -> str:
        run = self.train("two_way", "--labels", " A", " B", "--prompt_template", "prompts/two_way.txt",
                         train_file="two_way.csv")
        self.check_run(run, n_labels=2)
        summary = self.reproduces(run, n_labels=2, data_file="two_way.csv")
        winners, header = read_csv(self.plan.scores("two_way").replace(".csv", "_winner.csv"))
        require(header == ["id", "winner"] and winners and {w["winner"] for w in winners} <= {"model_a", "model_b"},
                f"the _winner.csv file: header {header}, {len(winners)} rows")
        return summary

    def fold_all(self) -> str:
        run = self.train("cv", "--fold", "all", "--n_folds", 2)
        folds = {r["id"]: r["fold"] for r in read_csv(os.path.join(run, "fold-0", "folds.csv"))[0]}
        oof = read_probabilities(os.path.join(run, "oof.csv"), 3)
        require(set(oof) == set(folds), f"{run}/oof.csv: {len(oof)} rows, the folds hold {len(folds)}")
        scored_by = {r["id"]: r["fold"] for r in read_csv(os.path.join(run, "oof.csv"))[0]}
        require(scored_by == folds, f"{run}/oof.csv: a row not scored by the model that held it out")
        with open(os.path.join(run, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        require(metrics["n"] == len(folds) and [f["fold"] for f in metrics["folds"]] == [0, 1],
                f"{run}/metrics.json: n {metrics['n']}, folds {[f['fold'] for f in metrics['folds']]}")
        return self.reproduces(os.path.join(run, "fold-1"), fold="1")

    # ---- scoring with the token run

    def tta(self) -> str:
        run = self.plan.run("token")
        plain = read_probabilities(self.plan.scores("token"), 3)  # its held-out rows, and each swapped
        rows, header = read_csv(self.plan.path("data", "token-heldout.csv"))
        originals = [{k: v for k, v in r.items() if k not in LABEL_COLUMNS} for r in rows
                     if not r["id"].endswith("-swapped")]
        data = write_csv(self.plan.path("data", "token-unlabelled.csv"), originals,
                         [c for c in header if c not in LABEL_COLUMNS])
        tta = read_probabilities(self.infer("tta", "--adapter", run, "--data_file", data, "--tta"), 3)
        expected = {r["id"]: [(plain[r["id"]][k] + plain[r["id"] + "-swapped"][j]) / 2
                              for k, j in enumerate((1, 0, 2))] for r in originals}
        moved = max(abs(a - b) for i in tta for a, b in zip(tta[i], plain[i]))
        return compare(tta, expected, self.tolerance(run), "--tta against the mean of plain and swapped") + \
            f"; TTA moved a probability by up to {moved:.2g}"

    def ensemble(self) -> str:
        runs = self.plan.run("token"), self.plan.run("label")
        offset = log_size(self.log)
        data = self.plan.path("data", "label-heldout.csv")
        out = self.infer("ensemble", "--adapter", runs[0], "--adapter", runs[1], "--data_file", data,
                         "--combine", "prob")
        loads = log_since(self.log, offset).count("is a LoRA adapter; loading its base")
        require(loads == 1, f"unsloth loaded the base {loads} times for two adapters on one base")
        one = read_probabilities(self.plan.scores("token"), 3)
        two = read_probabilities(self.plan.scores("label"), 3)
        got = read_probabilities(out, 3)
        expected = {i: [(a + b) / 2 for a, b in zip(one[i], two[i])] for i in got}
        return compare(got, expected, self.tolerance(runs[0]), "the ensemble against the mean of its members")

    def merge_adapter(self) -> str:
        """tools/merge_adapter.py into the 4-bit base (on a CPU, where unsloth merges only into 16-bit weights,
        into the 16-bit base), then the export scored in 16-bit against base + adapter, loaded as it was merged."""
        import torch

        run, merged = self.plan.run("token"), self.plan.path("merged")
        shutil.rmtree(merged, ignore_errors=True)
        four_bit = not self.plan.cpu
        script("tools/merge_adapter.py", run, merged, "--load_in_4bit", str(four_bit).lower())
        for name in ("prompt.txt", "config.yaml", "calibration.json"):
            require(os.path.exists(os.path.join(merged, name)), f"{merged}: no {name}")
        require(not os.path.exists(os.path.join(merged, "adapter_config.json")), f"{merged}: an adapter folder")
        with open(os.path.join(merged, "config.json"), encoding="utf-8") as f:
            dtype = getattr(torch, json.load(f)["dtype"])
        require(dtype in (torch.float16, torch.bfloat16), f"{merged}: saved in {dtype}, not 16-bit")
        data = self.plan.path("data", "token-heldout.csv")
        got = read_probabilities(self.infer("merged", "--model", merged, "--load_in_4bit", "false", "--data_file",
                                            data), 3)
        if four_bit:
            expected = read_probabilities(self.plan.scores("token"), 3)
        else:
            expected = read_probabilities(self.infer("token-16bit", "--adapter", run, "--load_in_4bit", "false",
                                                     "--data_file", data), 3)
        return compare(got, expected, same_result_tolerance(dtype),
                       f"the export merged into the {'4' if four_bit else '16'}-bit base, against base + adapter")

    def offline(self) -> str:
        """infer.py --adapter RUN --model BASE in a fresh process, HF_HUB_OFFLINE unset, the hub a recorder:
        a copy of the run whose adapter_config.json names a base not on this machine."""
        run, moved = self.plan.run("token"), self.plan.run("moved")
        shutil.rmtree(moved, ignore_errors=True)
        shutil.copytree(run, moved, ignore=shutil.ignore_patterns("checkpoint-*"))
        config_path = os.path.join(moved, "adapter_config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        config["base_model_name_or_path"] = self.plan.path("elsewhere", "base")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        out = self.plan.scores("offline")
        env = {k: v for k, v in os.environ.items() if k not in OFFLINE_SWITCHES}
        began = time.time()
        result = subprocess.run(
            [sys.executable, "infer.py", "--adapter", moved, "--model", self.plan.model("llama"), "--data_file",
             self.plan.path("data", "token-heldout.csv"), "--output_file", out, "--no_calibration"],
            cwd=ROOT, env=env, capture_output=True, text=True)
        print(result.stdout + result.stderr)
        lines = result.stderr.strip().splitlines()
        require(result.returncode == 0, f"infer.py exited {result.returncode}: {lines[-1] if lines else ''}")
        require("Retrying" not in result.stderr, "infer.py retried requests")
        summary = compare(read_probabilities(out, 3), read_probabilities(self.plan.scores("token"), 3),
                          self.tolerance(run), "--model BASE in a fresh process against the run on its own base")
        return f"{summary}; {time.time() - began:.0f} s with the process start"

    # ---- the Llama-3-8B shape (GPU only)

    def llama3_8b_build(self) -> str:
        script("tools/make_random_model.py", "--out", self.plan.model("llama3-8b"), "--preset", "llama3-8b",
               "--corpus", os.path.join(self.plan.data, "train.csv"))
        return "the llama3-8b preset"

    def llama3_8b_loss_label(self) -> str:
        return self.trained("llama3-8b-label", "--loss", "label", model="llama3-8b")


def feature_list(f: Features, cpu: bool) -> list[tuple]:
    """(name, check, needs, seconds it needs on a GPU), in the order they run."""
    setup = ("data", "llama")
    plan = [
        ("data", f.data, (), 10),
        ("llama", f.llama, ("data",), 20),
        ("gemma2", f.gemma2, ("data",), 10),
        ("loss_token", f.loss_token, setup, 30),
        ("loss_label", f.loss_label, setup, 30),
        ("tta", f.tta, ("loss_token",), 15),
        ("ensemble", f.ensemble, ("loss_token", "loss_label"), 15),
        ("offline", f.offline, ("loss_token",), 40),
        ("swap_augment", f.swap_augment, setup, 30),
        ("distill", f.distill, setup, 30),
        ("label_head", f.label_head, setup, 30),
        ("chat_template", f.chat_template, ("data", "gemma2"), 30),
        ("two_way", f.two_way, setup, 30),
        ("fold_all", f.fold_all, setup, 45),
        ("merge_adapter", f.merge_adapter, ("loss_token",), 30),
    ]
    if not cpu:
        plan += [("llama3_8b_build", f.llama3_8b_build, ("data",), 200),
                 ("llama3_8b_loss_label", f.llama3_8b_loss_label, ("llama3_8b_build",), 150)]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="Tiny models on the CPU, float32 (CI).")
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "runs", "gpu-check"),
                        help="Where gpu_check.json and gpu_check.log go (default: $OUT, else runs/gpu-check).")
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "gpu-check-work"),
                        help="Models, data and run folders (not copied to --out).")
    parser.add_argument("--deadline", type=float, help="Unix time: a feature that would not finish is skipped.")
    parser.add_argument("--resume", action="store_true", help="Keep the features gpu_check.json already records.")
    parser.add_argument("--only", nargs="+", help="Run these features again, keeping the rest of the record and of "
                                                  "--work (when a check is being mended).")
    args = parser.parse_args()

    os.chdir(ROOT)
    os.makedirs(args.out, exist_ok=True)
    hub = HubRecorder()  # before anything imports huggingface_hub, which reads HF_ENDPOINT once
    os.environ["HF_ENDPOINT"] = hub.url
    for name in OFFLINE_SWITCHES:
        os.environ.pop(name, None)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    log = os.path.join(args.out, LOG_FILE)
    record, died = Record(os.path.join(args.out, RESULT_FILE)), []
    if (args.resume or args.only) and os.path.exists(record.path):
        with open(record.path, encoding="utf-8") as f:
            record.data = json.load(f)
        died = [e for e in record.data.get("features", []) if e["status"] == "running"]
        for entry in died:
            entry.update(status="fail", reason=f"the process died during this feature (see {LOG_FILE})")
        if args.only:  # run these again
            record.data["features"] = [e for e in record.data["features"] if e["feature"] not in args.only]
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        open(log, "a").close()
    began = time.time()
    try:
        with output_to(log):
            import unsloth  # noqa: F401  (first, as in the scripts)
            import torch

            from arena.run_folder import versions
            from bench.common import device_name
    except ImportError as e:  # a package the kit lacks: no feature can run
        print(f"error: {e} (see {log})", file=sys.stderr)
        sys.exit(2)
    record.data.setdefault("mode", "cpu" if args.cpu else "gpu")
    record.data.setdefault("device", device_name())
    record.data.setdefault("versions", versions())
    record.save()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no GPU visible; use --cpu for the CPU mode", file=sys.stderr)
        sys.exit(2)

    plan = Plan(args.work, args.cpu, batch=4 if args.cpu else 8)
    features = Features(plan, log, hub)
    checker = Checker(record, log, args.deadline, hub)
    checker.say(f"gpu_check: {record.data['mode']} mode on {record.data['device']}, imports {time.time() - began:.0f} s")
    for entry in died:
        checker.say(f"{entry['feature']}: fail {entry['reason']}")
    for name, check, needs, needs_s in feature_list(features, args.cpu):
        if args.only and name not in args.only:
            continue
        checker.run(name, check, needs, 0 if args.deadline is None else needs_s)
    entries = [e for e in record.entries().values() if not args.only or e["feature"] in args.only]
    failed = [e["feature"] for e in entries if e["status"] != "pass"]
    record.data["seconds"] = round(record.data.get("seconds", 0) + time.time() - began, 1)
    record.save()
    checker.say(f"gpu_check: {len(entries) - len(failed)} of {len(entries)} passed in {time.time() - began:.0f} s"
                + (f"; not passed: {', '.join(failed)}" if failed else "") + f"  ({record.path})")
    sys.exit(3 if failed else 0)


if __name__ == "__main__":
    main()
