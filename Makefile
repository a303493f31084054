# sharp_fpn: `make demo` sets up and runs the CPU demo; `make test` sets up and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean
setup:
	bash scripts/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -q

# The quick R-101 neck cost table (~2.5 min on 2 cores); its files go to output/bench, not
# into benchmarks/results, which holds the curated tables.
bench: setup
	$(PY) benchmarks/neck_cost.py --backbones R101 --measure params macs neck --output-dir output/bench

clean:
	rm -rf $(VENV) demo_output
