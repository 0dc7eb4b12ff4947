# make demo   set up .venv, build the demo data and a tiny model, train, score the held-out fold, write a submission
# make test   set up .venv and run the tests (CPU; real unsloth, trl and tokenizers on tiny models)
# make offline-kit   the wheels a Kaggle notebook (no internet) needs beyond its image, in $(KIT)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test offline-kit clean

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
	print(f\"demo: held-out log loss {m['log_loss']:.4f} (uniform guess 1.0986), accuracy {m['accuracy']:.3f}\")"

test: setup
	$(PY) -m pytest -q tests

# The kit's target. Kaggle's GPU notebooks run the image Kaggle/docker-python builds FROM Colab's GPU runtime
# (Dockerfile.tmpl; the 2026-07-16 Colab release since September 2026, torch 2.11): Ubuntu 22.04, so glibc 2.35 and
# manylinux_2_35 wheels on x86-64, and Python 3.12 (its site-packages is python3.12/dist-packages; Colab's
# os-info-gpu.txt of that runtime: Python 3.12.13). KIT_IMAGE lists what that image has of this project's packages
# (torch, triton, numpy, pandas, older transformers, accelerate, peft, datasets, ...; no trl, bitsandbytes or
# unsloth): see its header for the source. The kit holds the rest: tools/offline_kit.py says how it is chosen.
KIT ?= runs/offline-kit
KIT_PYTHON ?= 3.12
KIT_PLATFORM ?= manylinux_2_35_x86_64
KIT_IMAGE ?= tools/kaggle-gpu-image.txt

offline-kit: setup
	$(PY) tools/offline_kit.py --out $(KIT) --python_version $(KIT_PYTHON) --platform $(KIT_PLATFORM) --image $(KIT_IMAGE)

clean:
	rm -rf runs data/demo
