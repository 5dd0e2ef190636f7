# The two commands at the top of README.md: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv lab test lint format demo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# The lab's system parts: Debian's Go toolchain and govmomi for vCenter's simulator (apt-get, as
# root, only when missing), then the vcsim build, cached by the hash of lab/vcsim/main.go.
lab: venv
	$(BIN)/python -m lab.vcsim.build --install-deps

test: lab
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: lab
	$(BIN)/python -m lab.demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
