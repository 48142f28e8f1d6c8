# Bastion — `make demo` runs the gateway on embedded defaults; `make test` runs ruff, mypy, then the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench fuzz setup clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Bastion needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,semantic]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	BASTION_PROMPTS_DIR=$${BASTION_PROMPTS_DIR:-examples/prompts} $(BIN)/bastion demo

# lint and type errors fail the target before the suite starts
test: lint typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# mypy with the pydantic plugin over src/bastion ([tool.mypy] in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/python bench/overhead.py

# The endpoint fuzz at 10x its CI size (BASTION_FUZZ_EXAMPLES bodies per endpoint; CI runs 5,000).
fuzz: $(STAMP)
	BASTION_FUZZ_EXAMPLES=$${BASTION_FUZZ_EXAMPLES:-50000} $(BIN)/python -m pytest -q -s -p no:cacheprovider --timeout=0 \
		tests/security/test_fuzz_endpoints.py

clean:
	rm -rf $(VENV) .bastion .pytest_cache .mypy_cache
