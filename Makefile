# hotpipe: `make demo` runs the whole thing locally, `make test` runs every test.
# Both create .venv on first use (the CPU torch wheel, then hotpipe with all extras).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned for CPU setups: an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo stack test lint typecheck unit e2e deploy bench tables docs clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[all]'
	touch $@

install: $(VENV)/.installed

demo: install  ## tiny checkpoints + local stack + text2image -> image2image -> inpainting -> a scheduler -> a LoRA
	$(PY) -m hotpipe dev demo --out demo-output

stack: install  ## a local stack that keeps running (Ctrl-C to stop)
	$(PY) -m hotpipe dev stack

test: install lint typecheck  ## lint, types, unit and end-to-end tests
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .

typecheck: install
	$(PY) -m mypy hotpipe shared producer workers tests benchmarks setup.py

unit: install
	$(PY) -m pytest tests/shared tests/producer tests/workers

e2e: install
	$(PY) -m pytest tests/e2e

deploy: install  ## images (hadolint), compose file, Helm chart (rendered, linted, validated offline)
	$(PY) -m pytest tests/deploy tests/test_config_reference.py

bench: install  ## benchmarks/ figures for BENCHMARKS.md (not tests)
	$(PY) -m benchmarks.overhead

docs: install  ## regenerate docs/configuration.md from the settings model
	$(PY) -m hotpipe.config_reference docs/configuration.md

tables: install  ## regenerate shared/hotpipe/shared/{family,scheduler}_table.py from the installed Diffusers
	$(PY) -m hotpipe.workers.tables_gen > shared/hotpipe/shared/family_table.py.new && mv shared/hotpipe/shared/family_table.py.new shared/hotpipe/shared/family_table.py
	$(PY) -m hotpipe.workers.tables_gen schedulers > shared/hotpipe/shared/scheduler_table.py.new && mv shared/hotpipe/shared/scheduler_table.py.new shared/hotpipe/shared/scheduler_table.py

clean:
	rm -rf $(VENV) .hotpipe demo-output .pytest_cache .mypy_cache .ruff_cache
