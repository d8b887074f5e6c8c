# Set-up, tests and demo for the 12349 hotline engine on Debian 12.
#
# `make test` and `make demo` install everything they need: Debian packages, a Python
# virtual environment, a cached Asterisk 22 root (outside the clone) and the prompt audio.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOTLINE_CACHE ?= /var/cache/hotline
export HOTLINE_CACHE

DEBIAN_PACKAGES := python3-venv debootstrap sip-tester mosquitto espeak-ng ffmpeg sox tcpdump iproute2 procps util-linux \
	graphviz fonts-wqy-microhei
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Tests and the demo run in a private network namespace that holds only a loopback
# interface, so nothing they start can send a packet off this machine. Asterisk's SIP
# stack looks up its default address by connecting a UDP socket to an outside address
# at start, which on a normal host makes the kernel probe the IPv6 default router.
ISOLATED := $(SUDO) unshare --net -- sh -c 'ip link set lo up && exec "$$@"' isolated

.PHONY: all system-deps venv asterisk prompts test unit demo soak bench bench-quick clean

all: test

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "安装 Debian 软件包:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@# The Debian mosquitto package starts a system broker on port 1883; the hotline runs its own.
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q mosquitto 2>/dev/null; then $(SUDO) systemctl disable --now mosquitto; fi

$(BIN)/hotline: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(BIN)/hotline

asterisk: system-deps
	bash asterisk-conf/build-root.sh

prompts: venv
	$(BIN)/hotline prompts build

unit: venv
	$(ISOLATED) $(BIN)/pytest -q -m "not integration"

# The integration tests mostly wait on prompts playing in real time, so three pytest
# workers (one test file each at a time) share the two cores.
PYTEST_WORKERS ?= 3

test: venv asterisk prompts
	$(ISOLATED) $(BIN)/pytest -q -ra -n $(PYTEST_WORKERS) --dist loadfile

demo: venv asterisk prompts
	$(ISOLATED) $(BIN)/hotline demo

# Full-length drills: longer partitions and more kill -9 rounds than `make test` runs.
soak: venv asterisk prompts
	$(ISOLATED) env HOTLINE_SOAK=1 $(BIN)/pytest -q -ra -n $(PYTEST_WORKERS) --dist loadfile

# Benchmarks, each against a baseline measured in the same run (docs/benchmarks.md).
# `bench-quick` is the short load ladder only; `bench` runs every benchmark in full.
bench-quick: venv asterisk prompts
	$(BIN)/pip install -q -e '.[bench]'
	$(ISOLATED) $(BIN)/python benchmarks/load_ivr.py --quick

bench: venv asterisk prompts
	$(BIN)/pip install -q -e '.[bench]'
	$(ISOLATED) $(BIN)/python benchmarks/load_ivr.py
	$(BIN)/python benchmarks/ticket_write.py --tickets 2000 --callers 1 8 32
	$(ISOLATED) $(BIN)/python benchmarks/tier_sync.py --tickets 2000 --latency-tickets 300 --rate 50
	$(BIN)/python benchmarks/acd_routing.py --decisions 2000
	$(BIN)/python benchmarks/profile_lookup.py --profiles 1000000 --lookups 5000

clean:
	rm -rf $(VENV) prompts/audio .pytest_cache
