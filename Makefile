# The two commands: `make run` (set up and start the gateway on the embedded voice) and
# `make test` (set up, run ruff and mypy, and the whole suite on Python 3.11 and 3.13).
PYTHON311 ?= python3
PYTHON313 ?= $(lastword $(sort $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13.*/bin/python3.13)))
VENV ?= .venv
VENV313 ?= .venv313
CONFIG ?= gateway.yaml

.PHONY: run test lint test311 test313 ops-tools speech-tools cluster-tools browser-tools check-config bench bench-pool bench-vad bench-cluster screenshots clean

run: $(VENV)/.installed
	$(VENV)/bin/tts-gateway serve --config $(CONFIG)

check-config: $(VENV)/.installed
	$(VENV)/bin/tts-gateway check-config --config $(CONFIG)

# Latency, calls per core (sweep), barge-in and audio quality; about four minutes.
bench: $(VENV)/.installed
	$(VENV)/bin/tts-gateway bench --calls 200 --duration 15 --sweep --quality \
		--plot bench-out/bench.png --json bench-out/bench.json

# First audio with a warm provider pool vs a cold connection (fakes with a 250 ms
# handshake): the pool must hide at least 95 % of it. About a minute for all three.
bench-pool: $(VENV)/.installed
	$(VENV)/bin/tts-gateway bench pool --provider all --json bench-out/bench-pool.json

# The control plane on Redis: control latency direct vs forwarded (2000 requests each),
# Redis operations per call and per heartbeat, and calls per machine with serve --workers 2
# against one process (a sweep: several minutes; run it on a quiet machine).
bench-cluster: cluster-tools $(VENV)/.installed
	$(VENV)/bin/tts-gateway bench cluster latency redis-ops machine \
		--json bench-out/bench-cluster.json

test: lint test311 test313

# ruff and mypy, configured in pyproject.toml; once, in the 3.11 environment.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check gateway codecs tests examples
	$(VENV)/bin/mypy

# Voice activity detection for barge-in: WebRTC VAD against Silero (if installed), detection
# delay over 48 trials and false starts in 10 minutes of silence, noise and echo; ~1 minute.
bench-vad: speech-tools $(VENV)/.installed
	$(VENV)/bin/python -m gateway.bench.vad --json bench-out/bench-vad.json

# Install Debian package $(1) unless every command in $(2) is on PATH (for $(3)); as root,
# or through sudo otherwise.
define debian_package
if ! (for c in $(2); do command -v $$c >/dev/null || exit 1; done); then \
	echo "installing Debian's $(1) for $(3)"; \
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		$(1) >/dev/null && \
	for c in $(2); do command -v $$c >/dev/null || exit 1; done; \
fi
endef

# Prometheus and promtool for tests/ops (Debian's prometheus package, which also starts a
# system service on :9090 where systemd runs); nothing to do when both are there.
ops-tools:
	@$(call debian_package,prometheus,prometheus promtool,tests/ops)

# espeak-ng: a second voice (besides the embedded Piper voice) for the caller's speech in
# the barge-in tests (tests/vad, tests/e2e/test_barge_in.py); nothing to do when it is there.
speech-tools:
	@$(call debian_package,espeak-ng,espeak-ng,the barge-in tests)

# redis-server for tests/cluster (Debian's redis-server package; where systemd runs it also
# starts a system service on :6379, which the tests do not use: each starts its own).
cluster-tools:
	@$(call debian_package,redis-server,redis-server,tests/cluster)

# chromium for tests/console (Debian's package; Playwright drives it, and downloads no
# browser of its own); nothing to do when it is there.
browser-tools:
	@$(call debian_package,chromium,chromium,tests/console)

# The console's screenshots in the README (docs/img/console*.png), taken by its test in
# headless chromium with a live simulated call; about fifteen seconds.
screenshots: browser-tools $(VENV)/.installed
	TTS_GATEWAY_SCREENSHOTS=docs/img $(VENV)/bin/python -m pytest -q -n 0 -p no:cacheprovider \
		tests/console/test_console_monitor.py::test_a_call_is_listed_followed_spoken_to_interrupted_and_hung_up \
		tests/console/test_browser_call.py::test_speech_asked_for_in_the_console_is_heard_in_the_browser_call

# Most tests wait on real time (calls play at 1x), not on the CPU: four workers, each test
# file on one worker so its module fixtures are built once. The browser tests (chromium
# takes a core of its own) run after the rest, two at a time, so that they never starve the
# tests that count late frames.
PYTEST = -m pytest -q -n 4 --dist loadfile --ignore=tests/console
PYTEST_BROWSER = -m pytest -q -n 2 --dist loadfile tests/console

test311: ops-tools speech-tools cluster-tools browser-tools $(VENV)/.installed
	$(VENV)/bin/python $(PYTEST)
	$(VENV)/bin/python $(PYTEST_BROWSER)

test313: ops-tools speech-tools cluster-tools browser-tools $(VENV313)/.installed
	$(VENV313)/bin/python $(PYTEST)
	$(VENV313)/bin/python $(PYTEST_BROWSER)

$(VENV)/.installed: pyproject.toml
	$(PYTHON311) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[local,dev]'
	touch $@

$(VENV313)/.installed: pyproject.toml
	@test -n "$(PYTHON313)" || { echo "Python 3.13 not found under pyenv (set PYTHON313=/path/to/python3.13)"; exit 1; }
	$(PYTHON313) -m venv $(VENV313)
	$(VENV313)/bin/pip install -q --upgrade pip
	$(VENV313)/bin/pip install -q -e '.[local,dev]'
	touch $@

clean:
	rm -rf $(VENV) $(VENV313) *.egg-info .pytest_cache .ruff_cache .mypy_cache
