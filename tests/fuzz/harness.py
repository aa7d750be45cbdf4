"""What every fuzz test shares: a real gateway on loopback in a thread of its own, a
healthy call beside the attack, and the properties checked after it.

Hypothesis drives plain (synchronous) test functions, so the gateway runs its own event
loop in a background thread and each example talks to it from a short-lived loop in the
test's thread, over real sockets. The properties, checked by ``assert_unharmed``:

- no traceback (and no ERROR line) in the gateway's log;
- no 5xx answer (checked per example by the tests);
- the healthy call keeps its frames on time (the simulator's lateness figures) and is
  still up;
- memory returns to within a few MB of where it was before the attack (its second
  round: see ``attack``).
"""

from __future__ import annotations

import asyncio
import copy
import ctypes
import gc
import io
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.http.app import create_app
from gateway.http.loopback import serve_on_loopback
from gateway.sim.carriers import make_call

T = TypeVar("T")

# Bounded in time: each fuzz test stops after its examples or this long, whichever first.
FUZZ_SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
                         deadline=None, database=None, derandomize=False,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])

HEALTHY_TEXT = ("This call must not notice the attack beside it. It keeps speaking, sentence "
                "after sentence, at the pace of a real phone call, while garbage arrives on "
                "the other sockets. ")


def fuzz_config(**overrides: Any) -> dict:
    """A gateway with every carrier enabled and the benchmark's fake voice (no model to
    load, so tests start in milliseconds); control API open on loopback only."""
    data = {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": {"voice": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                                "burst_factor": 4.0, "max_ahead_s": 2.0}},
        "routes": {
            "healthy": {"provider": "voice"},
            "fuzz": {"provider": "voice", "greeting": "Hello."},
        },
        "default_route": "fuzz",
        "carriers": {c: {} for c in ("twilio", "signalwire", "telnyx", "plivo", "vonage",
                                     "exotel", "asterisk")},
        "limits": {"max_calls": 200},
    }
    data.update(copy.deepcopy(overrides))
    return data


class LogCapture(logging.Handler):
    """Every WARNING-or-worse record of the gateway, and the ones that carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lock_ = threading.Lock()
        self.records: list[logging.LogRecord] = []
        self.bytes = 0

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock_:
            self.records.append(record)
            try:
                self.bytes += len(self.format(record))
            except Exception:  # a record that cannot be formatted is itself a finding
                self.bytes += 1

    def mark(self) -> int:
        """Where the next test's records begin (see ``problems``)."""
        with self.lock_:
            return len(self.records)

    def problems(self, since: int = 0) -> list[str]:
        with self.lock_:
            bad = [r for r in self.records[since:]
                   if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
        return [f"{r.name} {r.levelname}: {r.getMessage()[:300]}"
                + (f" [{r.exc_info[0].__name__}: {str(r.exc_info[1])[:200]}]"
                   if r.exc_info else "") for r in bad]


def rss_bytes() -> int:
    """Resident memory once freed memory has gone back to the system: glibc keeps freed
    large blocks in its heap (its mmap threshold grows with use), which is not a leak."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS as it is
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class GatewayThread:
    """A real gateway (create_app + an aiohttp server on 127.0.0.1) on a loop in its own
    thread, with a healthy Twilio call that keeps speaking for as long as it runs."""

    def __init__(self, config_data: dict, environ: dict | None = None,
                 before_start: Callable[[], Awaitable[dict]] | None = None):
        self.config_data = config_data
        self.environ = environ or {}
        self.before_start = before_start
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-gateway",
                                       daemon=True)
        self.log = LogCapture()
        self.app = None
        self.runner = None
        self.port = 0
        self.extra: dict = {}
        self.healthy = None
        self._speaker: asyncio.Task | None = None
        self._stopping = False
        self.log_since = 0

    # -- running things on the gateway's loop ---------------------------------------------

    def run(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> GatewayThread:
        logging.getLogger().addHandler(self.log)
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        if self.before_start is not None:
            self.extra = await self.before_start()
            self.config_data = self.extra.pop("config", self.config_data)
        config = parse_config(self.config_data, self.environ)
        self.app = create_app(config)
        self.runner, self.port = await serve_on_loopback(self.app)
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                async with http.get(self.http_url + "/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.025)
            else:
                raise AssertionError("the fuzz gateway never became ready")
        self.healthy = make_call("twilio", self.ws_url, route="healthy")
        await self.healthy.connect()
        self._speaker = asyncio.get_running_loop().create_task(self._keep_speaking())

    async def _keep_speaking(self) -> None:
        """Speak into the healthy call whenever its queue is empty."""
        import aiohttp

        call_id = self.healthy.call_id
        async with aiohttp.ClientSession() as http:
            while not self._stopping:
                async with http.get(f"{self.http_url}/v1/calls/{call_id}") as resp:
                    if resp.status != 200:
                        return
                    state = await resp.json()
                if not state["speaking"] and not state["queued"]:
                    async with http.post(f"{self.http_url}/v1/calls/{call_id}/speak",
                                         json={"text": HEALTHY_TEXT}) as resp:
                        assert resp.status == 202, await resp.text()
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            logging.getLogger().removeHandler(self.log)

    async def _stop(self) -> None:
        started = time.monotonic()
        self._stopping = True
        if self._speaker:
            self._speaker.cancel()
        steps = []
        if self.healthy is not None:
            steps.append(("the healthy call's hang-up", self.healthy.hangup()))
        if self.runner is not None:
            steps.append(("the gateway's shutdown", self.runner.cleanup()))
        steps += [("a fake's shutdown", cleanup()) for cleanup in self.extra.get("cleanups", [])]
        for what, step in steps:  # the servers the gateway used go last
            task = asyncio.ensure_future(step)
            done, _ = await asyncio.wait({task}, timeout=20)
            if not done:
                stacks = io.StringIO()
                for other in asyncio.all_tasks():
                    if other is not asyncio.current_task():
                        other.print_stack(limit=8, file=stacks)
                raise AssertionError(f"{what} did not end within 20 s:\n{stacks.getvalue()}")
        print(f"fuzz gateway stopped in {time.monotonic() - started:.1f} s")

    # -- the properties -------------------------------------------------------------------

    def healthy_figures(self) -> dict:
        async def snapshot():
            return self.healthy.result, self.healthy.ended

        result, ended = self.run(snapshot())
        timing = result.frame_timing()
        return {"ended": ended, "frames": len(result.frames),
                "lateness_p99_ms": round(timing.p99 * 1000, 1) if timing else None,
                "lateness_max_ms": round(timing.max * 1000, 1) if timing else None,
                "underruns": result.underruns}

    def assert_unharmed(self, name: str, rss_before: int, *, rss_slack_mb: float = 24) -> None:
        """The properties every fuzz test ends with (see the module doc)."""
        time.sleep(0.3)  # let the last example's connection finish on the server
        gc.collect()
        grown_mb = (rss_bytes() - rss_before) / 2**20
        figures = self.healthy_figures()
        problems = self.log.problems(self.log_since)
        print(f"\n{name}: healthy call {figures}; gateway log {self.log.bytes} bytes in "
              f"{len(self.log.records)} warnings; RSS grew {grown_mb:.1f} MB")
        assert not problems, "tracebacks or errors in the gateway log:\n" + "\n".join(
            problems[:10])
        assert not figures["ended"], "the healthy call was ended by the attack beside it"
        assert figures["frames"] > 0, "the healthy call heard nothing"
        # A stalled event loop shows as seconds of lateness; scheduling noise on a busy
        # two-core machine stays far below this bound.
        assert figures["lateness_max_ms"] < 1000, figures
        assert grown_mb < rss_slack_mb, f"memory grew {grown_mb:.1f} MB during the fuzz"


def attack(gw: GatewayThread, *runs: Callable[[], None]) -> int:
    """Run the Hypothesis tests ``runs`` twice; return the RSS between the two rounds.

    The first round warms up what any first use allocates (imports, caches, the greeting
    cache, Hypothesis's own), so that the growth over the second round, which
    ``assert_unharmed`` checks, is what the attack leaves behind. The log is checked over
    both rounds."""
    gw.log_since = gw.log.mark()
    for run in runs:
        run()
    time.sleep(0.3)
    rss = rss_bytes()
    for run in runs:
        run()
    return rss


# ---- strategies ------------------------------------------------------------------------------

_NASTY_TEXT = st.sampled_from([
    "", " ", "\n", "\r\nFORGED log line", "\x00", "\x1b[31m", "\u2028", "💥", "%s%n%d",
    "../../etc/passwd", "a/b", "A" * 5000, "9" * 30, "-1", "1e309", "NaN", "null", "{}", "[]",
])
_EDGE_NUMBERS = st.sampled_from([0, -1, 1, 7999, 8000, 12345, 16000, 22050, 48000, 10**9, 2**31,
                                 2**63, 0.5, -0.0, 1e308])
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | _EDGE_NUMBERS
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
                | _NASTY_TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS,
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
# Texts no JSON encoder writes but an attacker does: deep nesting, a 5,000-digit integer,
# a truncated document, invalid UTF-8 in a text frame is impossible (aiohttp refuses it).
RAW_JSON_ATTACKS = st.sampled_from([
    "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
    '{"event": ' + "9" * 5000 + "}", '{"event": "start", "start": ' + "[" * 3000,
    "not json at all", "{", '"just a string"', "12", "[]", "null", "\ufeff{}",
])


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON document (keys and list indices), the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += paths(item, (*prefix, index))
    return out


def _same_type(value: Any) -> st.SearchStrategy:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(_EDGE_NUMBERS.filter(lambda v: isinstance(v, int)),
                         st.integers(-2**40, 2**40))
    if isinstance(value, float):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(value, str):
        return st.one_of(_NASTY_TEXT, st.text(max_size=40), _EDGE_NUMBERS.map(str))
    return JSON_SCALARS


def _at(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


def replaced(value: Any, path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    value = copy.copy(value)
    head, rest = path[0], path[1:]
    if rest:
        value[head] = replaced(value[head], rest, new, delete)
    elif delete and isinstance(value, dict):
        del value[head]
    else:
        value[head] = new
    return value


@st.composite
def mutated_json(draw, messages: list[str], *, leaves_only: bool = False) -> str:
    """One of ``messages`` (JSON texts) with up to three values replaced, deleted or
    retyped (``leaves_only``: only scalar values, so the document's shape survives and
    the odd value reaches what is built from it)."""
    doc = json.loads(draw(st.sampled_from(messages)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        candidates = paths(doc)
        if leaves_only:
            candidates = [p for p in candidates
                          if p and not isinstance(_at(doc, p), (dict, list))]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        if leaves_only:  # mostly a value of the same type: it passes type checks, goes deeper
            value = draw(st.one_of(_same_type(_at(doc, path)), _same_type(_at(doc, path)),
                                   JSON_SCALARS))
        else:
            value = draw(st.one_of(JSON_SCALARS, JSON_VALUES))
        doc = replaced(doc, path, value, delete=draw(st.integers(0, 3)) == 0)
    return json.dumps(doc)


@st.composite
def mutated_bytes(draw, messages: list[bytes]) -> bytes:
    """One of ``messages`` truncated, extended, or with bytes flipped."""
    data = bytearray(draw(st.sampled_from(messages)))
    op = draw(st.sampled_from(["truncate", "extend", "flip", "random", "huge"]))
    if op == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)):]
    elif op == "extend":
        data += draw(st.binary(max_size=64))
    elif op == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif op == "random":
        data = bytearray(draw(st.binary(max_size=400)))
    elif op == "huge":
        data += b"\x7f" * draw(st.sampled_from([4000, 70_000]))
    return bytes(data)


def run_client(coro_factory: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Run one example's client side on a fresh loop in this thread."""
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro_factory()

    return asyncio.run(bounded())
