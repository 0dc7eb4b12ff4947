"""The real-model demo's pieces that need no model: the shipped LLMEval^2 battles (data/llmeval2/) read cleanly,
and tools/compare.py prints the class prior beside each run and refuses a run that scored other rows."""

import json

import numpy as np

from conftest import ROOT, run_cli
from arena.data import read_pairs
from arena.scoring import metrics

DATA = ROOT / "data" / "llmeval2"


def test_shipped_battles_read_cleanly_with_their_licence():
    train, test = read_pairs(str(DATA / "train.csv")), read_pairs(str(DATA / "test.csv"))
    assert (len(train), len(test)) == (400, 200)
    assert not {p.id for p in train} & {p.id for p in test}
    for pairs in (train, test):
        assert set(np.bincount([p.label for p in pairs], minlength=3).nonzero()[0]) == {0, 1, 2}  # A, B and ties
    assert "MIT License" in (DATA / "LICENSE").read_text() and "DAMO-ConvAI" in (DATA / "README.md").read_text()


def test_compare_prints_the_prior_beside_each_run(tmp_path):
    test = read_pairs(str(DATA / "test.csv"))
    labels = np.array([p.label for p in test])
    uniform = metrics(np.full((len(test), 3), 1 / 3), labels)
    (tmp_path / "uniform").mkdir()
    (tmp_path / "uniform" / "metrics.json").write_text(json.dumps(uniform))
    result = run_cli("tools/compare.py", "--train", DATA / "train.csv", "--test", DATA / "test.csv",
                     f"uniform={tmp_path / 'uniform'}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    train_counts = np.bincount([p.label for p in read_pairs(str(DATA / "train.csv"))], minlength=3) + 1.0
    prior = metrics(np.tile(train_counts / train_counts.sum(), (len(test), 1)), labels)
    assert lines[2].split() == ["class", "prior", f"{prior['log_loss']:.4f}", f"{prior['accuracy']:.3f}"]
    assert lines[3].split() == ["uniform", f"{np.log(3):.4f}", f"{uniform['accuracy']:.3f}"]

    (tmp_path / "uniform" / "metrics.json").write_text(json.dumps({**uniform, "n": 10}))
    result = run_cli("tools/compare.py", "--train", DATA / "train.csv", "--test", DATA / "test.csv",
                     f"uniform={tmp_path / 'uniform'}")
    assert result.returncode != 0 and "scored 10 rows" in result.stderr
