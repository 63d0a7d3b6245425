# The two commands of the README's promise: `make demo` and `make test`.
# Each sets up everything it needs (virtualenv, npm packages) on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
# checkov (the infra template's linter) lives in a virtualenv of its own: its ~100
# pinned packages would otherwise constrain the app's.
CHECKOV = .venv-checkov/bin/checkov

.PHONY: demo test lint unit bench lock lock-steps clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[pipeline,azure,dev]'
	@touch $@

$(CHECKOV): infra/checkov-constraints.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q --disable-pip-version-check -c infra/checkov-constraints.txt checkov
	@touch $@

node_modules/.package-lock.json: package.json
	npm install --no-audit --no-fund --loglevel=error

demo: $(STAMP)
	$(BIN)/aml-trigger demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not azurite and not infra_lint and not fuzz" -q

test: $(STAMP) node_modules/.package-lock.json $(CHECKOV) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

lock:
	rm -rf /tmp/aml-trigger-lock && $(PYTHON) -m venv /tmp/aml-trigger-lock
	/tmp/aml-trigger-lock/bin/pip install -q '.[pipeline,azure,dev]'
	/tmp/aml-trigger-lock/bin/pip freeze --exclude aml-trigger | sort -f > constraints.txt

# Re-pin the Azure ML step environment (pipeline/environment/conda.yaml) from
# pipeline/environment/requirements.in.
lock-steps: $(STAMP)
	$(BIN)/python scripts/lock_step_env.py

clean:
	rm -rf $(VENV) .venv-checkov node_modules .local
