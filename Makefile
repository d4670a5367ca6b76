# Two entry points (see README): `make demo` and `make test`. Both set everything up first.
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

.PHONY: setup apt venv test demo bench lint clean
setup: apt venv

apt:
	@missing=""; for b in $(APT_PROBES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
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

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test: setup lint
	$(BIN)/python -m pytest -q -ra

lint: setup
	$(BIN)/ruff check daemon client manifests vmm_ffi tests bench examples
	$(BIN)/mypy --strict daemon client manifests vmm_ffi

demo: setup
	$(BIN)/python -m examples.demo

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
