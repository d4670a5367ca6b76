# Two entry points (see README): `make demo` and `make test`. Both set everything up first.
# `make check` is the quick tier for development; `make lock` re-resolves requirements.lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
	docker-registry debootstrap busybox-static skopeo umoci rsync apache2-utils zstd \
	systemd iproute2 procps passt slirp4netns iptables nftables uidmap libseccomp2
# Binaries that prove the packages above are present (checked when we cannot install).
APT_PROBES := gcc docker-registry debootstrap busybox skopeo umoci rsync htpasswd zstd systemd-analyze \
	pasta slirp4netns iptables-nft nft newuidmap

.PHONY: setup apt venv lock test check demo bench lint clean
setup: apt venv

# The probe looks in /usr/sbin and /sbin too: debootstrap and iptables-nft live there, off a
# normal user's PATH on Debian (tests/test_setup.py runs it as one).
apt:
	@export PATH="$$PATH:/usr/sbin:/sbin"; missing=""; for b in $(APT_PROBES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	/sbin/ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2 ' || missing="$$missing libseccomp2"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing apt packages (missing:$$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	else \
		echo "missing:$$missing"; \
		echo "run as root: apt-get install -y $(APT_PACKAGES)"; exit 1; \
	fi

# The venv holds exactly requirements.lock (hash-checked), then the project itself: a new lock
# makes a new venv, so nothing a previous lock installed lingers.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve requirements.lock from pyproject.toml (after changing a dependency or its range,
# or to take newer releases on purpose), then run `make test` before committing both files.
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
		--generate-hashes --native-tls --custom-compile-command "make lock" -q -o requirements.lock

# The whole suite, two tests at a time (host_exclusive tests alone), slowest 25 listed at the end.
test: setup lint
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadfile --durations=25

# The quick tier (under 2 minutes here): lint and every test outside e2e/, faults/, systemd/.
check: setup lint
	$(BIN)/python -m pytest -q -ra -n 2 -m "not slow"

lint: setup
	$(BIN)/ruff check daemon client manifests vmm_ffi tests bench examples
	$(BIN)/mypy --strict daemon client manifests vmm_ffi
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layering.py  # the import layering

demo: setup
	$(BIN)/python -m examples.demo

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
