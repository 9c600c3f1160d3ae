# Everything a fresh machine needs: `make demo` and `make test` build .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench docs clean

$(STAMP): pyproject.toml
	@python=$${PYTHON:-$$(tools/find-python.sh)} || exit 1; \
	 echo "using $$python ($$($$python --version))"; \
	 [ -x $(PY) ] || $$python -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,docs]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/regression_uncertainty.py --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "" --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check bayesnn tests examples benchmarks

# The API pages render every Sphinx role of the docstrings (tools/griffe_sphinx_roles.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site
	@! grep -rlE ':(func|class|meth|mod|attr|data|obj|exc):<code>' site/api \
	  || { echo "raw Sphinx roles in the pages above"; exit 1; }

# Short versions of the benchmarks (minutes); full sizes via each script's flags.
# Each is a module of the benchmarks package, run from the repository root.
bench: $(STAMP)
	$(PY) -m benchmarks.speed --quick --out out/bench
	$(PY) -m benchmarks.predict_memory --num-draws 100 --num-inputs 2000 --out out/bench
	$(PY) -m benchmarks.augment_epoch --num-examples 256 --repeats 1 --out out/bench
	$(PY) -m benchmarks.noise_generators --steps 20 --repeats 1 --out out/bench
	$(PY) -m benchmarks.mnist --quick --data ../shared/data/mnist/mnist.npz --out out/bench
	rm -f out/bench/uci.json
	$(PY) -m benchmarks.uci --data-dir ../shared/data/uci --methods MAP SGLD --splits 1 \
	  --out out/bench

clean:
	rm -rf $(VENV) out site .pytest_cache
