# Two commands on a fresh machine:  `make demo` (main job) and `make test` (test suite).
# Each creates and reuses the local virtual environment .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench gpu-check clean-venv

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python Code/seg_train.py

test: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python Code/bench.py data
	HF_HUB_OFFLINE=1 $(BIN)/python Code/bench.py losses
	HF_HUB_OFFLINE=1 $(BIN)/python Code/bench.py train --steps 5

gpu-check: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python Code/bench.py gpu

clean-venv:
	rm -rf $(VENV)
