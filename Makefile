# The two commands of the README: `make run` and `make test`. Both install
# what they need (OS packages when missing, the virtualenv) first.

VENV        := .venv
PYTHON      ?= python3
OS_PACKAGES := runc conmon busybox-static docker-registry skopeo tini catatonit \
               iptables nftables apache2-utils curl openssl docker-compose \
               containernetworking-plugins debootstrap
DATA_ROOT   ?= /var/lib/berth
EXEC_ROOT   ?= /run/berth
PYTEST_ARGS ?=

.PHONY: run test deps venv lint clean

run: deps venv
	$(VENV)/bin/berth up --data-root $(DATA_ROOT) --exec-root $(EXEC_ROOT)

test: deps venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS) tests/unit tests/integration tests/e2e

deps:
	@missing=$$(for p in $(OS_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing OS packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml hatch_build.py $(shell find protos -name '*.proto')
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) gen
