# sharp_fpn: `make demo` sets up and runs the CPU demo; `make test` sets up and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench gpu-dry-run clean
setup:
	bash scripts/setup_env.sh

demo: setup
	$(PY) tools/demo.py

# One pytest worker per core (at most 4), whole files per worker so that each module's fixtures
# are built once: the tests run one torch thread each, so a single process leaves a core idle.
test: setup
	$(PY) -m pytest -q -n logical --maxprocesses 4 --dist loadfile

# The quick R-101 neck cost table (~2.5 min on 2 cores); its files go to output/bench, not
# into benchmarks/results, which holds the curated tables.
bench: setup
	$(PY) benchmarks/neck_cost.py --backbones R101 --measure params macs neck --output-dir output/bench

# The prepared GPU run (scripts/gpu_run.sh) at a tiny size on the CPU, as tests/test_gpu_run.py runs it.
gpu-dry-run: setup
	PYTHON=$(PY) bash scripts/gpu_run.sh --tiny --device cpu output/gpu_dry_run

clean:
	rm -rf $(VENV) demo_output
