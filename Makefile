# make demo   set up .venv, build the demo data and a tiny model, train, score the held-out fold, write a submission
# make test   set up .venv and run the tests (CPU; real unsloth, trl and tokenizers on tiny models)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-unsloth.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-unsloth.txt
	touch $@

demo: setup
	$(PY) data/make_demo_data.py --out data/demo
	$(PY) tools/make_random_model.py --out runs/demo-model --corpus data/demo/train.csv
	$(PY) train_unsloth.py --config configs/demo.yaml
	$(PY) infer.py --adapter runs/demo --data_file data/demo/test.csv --output_file runs/demo-test/submission.csv
	@$(PY) -c "import json; m = json.load(open('runs/demo/metrics.json')); \
	print(f\"demo: held-out log loss {m['log_loss']:.4f} (Bayes limit {m['bayes_limit']:.4f}, uniform guess 1.0986), accuracy {m['accuracy']:.3f}\")"

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf runs data/demo
