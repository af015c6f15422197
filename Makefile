# The two commands of the README. Both install into the current Python environment
# (activate a virtualenv first if you want one); installing is a no-op once done.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check
# `make test EDITABLE=` installs a regular (non-editable) copy instead
EDITABLE ?= -e

.PHONY: setup demo test test-quick lint bench

setup:
	$(PYTHON) -m pip install $(PIP_FLAGS) $(EDITABLE) ".[dev,export]"

demo: setup
	$(PYTHON) train.py pipeline --task fashion-mini

test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

# The edit-test loop (docs/development.md): everything but the `slow` tests, no install step.
test-quick:
	$(PYTHON) -m pytest -q -m "not slow"

bench: setup
	$(PYTHON) bench/bench_train.py --quick
