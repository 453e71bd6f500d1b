# certagent: `make demo` runs the whole job against a local CA; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := pebble nginx-light acl util-linux ca-certificates openssl iproute2 \
	golang-go golang-github-smallstep-certificates-dev postgresql \
	keepalived openssh-server openssh-client faketime

.PHONY: deps venv step-ca salt-venv test lint unit demo bench clean

deps:
	@sh scripts/install-deps $(APT_PACKAGES)

# step-ca, the staging CA, built from Debian's Go packages into build/ (cached).
step-ca: deps
	@sh scripts/build-step-ca

# Salt lives in its own venv (pinned), with certagent installed into it so that Salt
# finds the execution and state modules through the salt.loader entry point.
SALT_VENV := build/salt-venv
$(SALT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SALT_VENV)
	$(SALT_VENV)/bin/pip install -q --upgrade pip
	$(SALT_VENV)/bin/pip install -q salt==3008.3 -e .
	touch $@

salt-venv: $(SALT_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check certagent tests testbed bench
	$(BIN)/mypy certagent

test: deps venv step-ca salt-venv lint
	$(BIN)/python -m pytest -q

unit: venv
	$(BIN)/python -m pytest -q -m "not integration"

demo: deps venv step-ca
	$(BIN)/python -m testbed.demo

bench: deps venv
	$(BIN)/python bench/renew_many.py
	$(BIN)/python bench/check_many.py

clean:
	rm -rf $(VENV) build
