# One Makefile for people and CI. `make help` lists the targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# pip options for the editable developer install (incremental native rebuilds on import)
DEV_FLAGS = --no-build-isolation -Ceditable.rebuild=true

.PHONY: help install dev deps test test-unit test-integration fuzz asan lint stubs bench openblas clean
FUZZ_SECONDS ?= 300

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: ## install the build requirements (for builds without isolation)
	$(PIP) install -q "scikit-build-core>=0.11" "nanobind==3.1.0" ninja cmake

install: ## build and install the package (CPU; set CMAKE_ARGS for BLAS/CUDA/Metal)
	$(PIP) install .

dev: deps ## editable install with the test extras; the native module rebuilds on import
	$(PIP) install $(DEV_FLAGS) -e ".[test]"

test: ## run the whole suite (unit + integration on the default model)
	$(PYTHON) -m pytest

test-unit: ## tests that need no model
	$(PYTHON) -m pytest tests/unit

test-integration: ## tests on the real default model
	$(PYTHON) -m pytest tests/integration

fuzz: ## fuzz grammar, schema, template, tokenizer and GGUF input (atheris), FUZZ_SECONDS each
	$(PYTHON) tests/fuzz/fuzz.py --seconds $(FUZZ_SECONDS)

lint: ## ruff (check + format) and mypy
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

asan: ## build with AddressSanitizer + UBSan (build/asan) and run unit, corpus, concurrency, vision tests
	bash tests/sanitize.sh

stubs: ## regenerate src/llamacpp_integrations/_core.pyi from the built module
	$(PYTHON) -m nanobind.stubgen -m llamacpp_integrations._core -o src/llamacpp_integrations/_core.pyi
	$(PYTHON) -m ruff format src/llamacpp_integrations/_core.pyi

bench: ## benchmarks against llama-bench and llama-cpp-python (nothing else running!)
	$(PYTHON) benchmarks/bench_engine.py

openblas: ## rebuild with OpenBLAS (needs libopenblas-dev) and run the tests
	CMAKE_ARGS="-DGGML_BLAS=on -DGGML_BLAS_VENDOR=OpenBLAS" $(PIP) install $(DEV_FLAGS) -Cbuild-dir=build/openblas -e ".[test]"
	$(PYTHON) -c "import llamacpp_integrations as l; print(l.system_info()); assert 'BLAS' in l.system_info(), l.backends()"
	$(PYTHON) -m pytest

clean: ## remove build output (the engine source cache in ~/.cache stays)
	rm -rf build dist *.egg-info
