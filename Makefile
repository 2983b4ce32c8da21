# `make demo` and `make test` work on a fresh machine: they create .venv (once) and install the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch 2.13.0 is pinned: here it installs from a local CPU build; any other version pulls CUDA packages.
EXTRAS := dev,formats,ray

.PHONY: setup demo test test-all lint bench-demo bench-train bench-scan bench-thorough bench-searches bench-many-labels bench-held-out bench-precision bench-mitigation bench-zoo docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' torch==2.13.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/neuralcleanse demo

# The default run skips tests marked slow; CI (CI=true) runs them too.
test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(CI),-m "slow or not slow",)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

bench-demo: $(STAMP)  # `neuralcleanse demo --precision float32` from an empty model cache, timed
	$(BIN)/python benchmarks/demo_time.py --precision float32

bench-train: $(STAMP)
	$(BIN)/python benchmarks/train_models.py

bench-scan: $(STAMP)
	$(BIN)/python benchmarks/scan_speed.py

bench-thorough: $(STAMP)  # fast mode with 3 searches for every label (--searches 3)
	$(BIN)/python benchmarks/scan_speed.py --modes fast --searches 3 --output scan_thorough \
		--models mnist-badnets,mnist-clean,gtsrb-badnets,gtsrb-clean

bench-searches: $(STAMP)  # verdicts of any 1..6 of 6 searches per label, and their ceiling
	$(BIN)/python benchmarks/searches_per_label.py

bench-many-labels: $(STAMP)  # fast scans of BadNets and clean models with 10, 100 and 1000 labels
	$(BIN)/python benchmarks/many_labels.py

bench-held-out: $(STAMP)  # other triggers, Trojan models and CIFAR-10: models the fast-mode settings never saw
	$(BIN)/python benchmarks/held_out.py

bench-precision: $(STAMP)  # the same scans in float32 and bfloat16: do the verdicts change?
	$(BIN)/python benchmarks/precision.py --models mnist-badnets,mnist-clean,cifar10-badnets,cifar10-trojan,cifar10-clean
	$(BIN)/python benchmarks/precision.py --models gtsrb-badnets,gtsrb-clean --seeds 0,1,2

bench-mitigation: $(STAMP)
	$(BIN)/python benchmarks/mitigation.py

bench-zoo: $(STAMP)  # zoo throughput in process and on Ray, Ray's overhead, a 1000-label model on 1 vs 2 shards
	$(BIN)/python benchmarks/zoo_scale.py

docs:  # docs/benchmarks.md from benchmarks/results/*.json (standard library only: no .venv needed)
	$(PYTHON) benchmarks/docs.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
