# certagent: `make demo` runs the whole job against a local CA; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What the demo needs (the CAs, nginx, the Go packages step-ca is built from), and what
# the tests need besides. Services these packages bring are not enabled at boot.
DEMO_PACKAGES := pebble nginx-light ca-certificates openssl iproute2 \
	golang-go golang-github-smallstep-certificates-dev
APT_PACKAGES := $(DEMO_PACKAGES) acl util-linux postgresql python3-venv \
	keepalived openssh-server openssh-client faketime certbot lego stress-ng haproxy \
	bind9 bind9-utils bind9-dnsutils apache2 postfix dovecot-imapd prometheus

.PHONY: docs deps demo-deps venv step-ca salt-venv a2c-venv wheelhouse test lint unit demo bench clean install deb

deps:
	@sh scripts/install-deps $(APT_PACKAGES)

demo-deps:
	@sh scripts/install-deps $(DEMO_PACKAGES)

# step-ca, the staging CA, built from Debian's Go packages into build/ (cached).
step-ca: demo-deps
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

# acme2certifier (ARI, profiles), pinned, in its own venv: an ACME server for the tests.
A2C_VENV := build/a2c-venv
$(A2C_VENV)/.installed:
	$(PYTHON) -m venv $(A2C_VENV)
	$(A2C_VENV)/bin/pip install -q acme2certifier==0.46.3
	touch $@

a2c-venv: $(A2C_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Wheels of certagent's dependencies and of its build backend, made before the tests
# (which run in a private network namespace, without PyPI): the install tests build
# and install the wheel from this checkout with `--no-index --find-links` here.
WHEELHOUSE := build/wheelhouse
$(WHEELHOUSE)/.done: pyproject.toml $(VENV)/.installed
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip wheel -q -w $(WHEELHOUSE) . 'setuptools>=77' wheel
	touch $@

wheelhouse: $(WHEELHOUSE)/.done

lint: venv
	$(BIN)/ruff check certagent tests testbed bench
	$(BIN)/mypy certagent

test: deps venv step-ca salt-venv a2c-venv wheelhouse lint
	$(BIN)/python -m pytest -q

unit: venv
	$(BIN)/python -m pytest -q -m "not integration"

demo: demo-deps venv step-ca
	$(BIN)/python -m testbed.demo

bench: deps venv wheelhouse
	$(BIN)/python bench/side_by_side.py
	$(BIN)/python bench/renew_many.py
	$(BIN)/python bench/check_many.py
	$(BIN)/python bench/first_noop.py
	$(BIN)/python bench/scale.py

# certagent for real use: /opt/certagent, /usr/local/bin/certagent, units, cron, /etc/certagent.
install:
	@sh scripts/install-deps
	@sh scripts/install

# The Debian package: build/certagent_VERSION_all.deb (see scripts/build-deb).
deb: venv wheelhouse
	@PYTHON=$(BIN)/python sh scripts/build-deb

clean:
	rm -rf $(VENV) build

# What is generated from one description: the configuration reference tables, the
# configuration's JSON Schema and the man page (tests fail when they are stale).
docs: venv
	$(BIN)/python scripts/gen-docs
