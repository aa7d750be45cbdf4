"""Log lines a carrier cannot forge or flood (issue 12, finding 6), against the real
``tts-gateway serve`` process and its real logging set-up.

* a ``callSid`` with a newline writes no line of its own: control characters are escaped;
* a 200 KB call id and a hundred bad frames write a few KB, not 20 MB: every value is cut
  to a bounded length and a call's warnings are rate-limited;
* 20,000 bad messages write a handful of warnings and a summary with the count of the
  rest, and the counts add up to 20,000;
* ``logging.format: json`` writes one JSON object per line, with the call's fields.

The figures (log bytes, warning lines) are printed; the asserts are about behaviour.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time

import aiohttp
import pytest

from gateway import logs
from tests.ops.test_drain import GatewayProcess, free_port

FORGED = "FORGED 2026-01-01 00:00:00,000 INFO gateway.http.control: admin token accepted"


def serve_log_config(port: int, fmt: str) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "providers": {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                               "chars_per_second": 50.0}},
        "carriers": ["twilio", "telnyx"],
        "routes": {"bot": {"provider": "fake"}},
        "default_route": "bot",
        "logging": {"level": "INFO", "format": fmt},
    }


@pytest.fixture
async def serve(tmp_path):
    """Start ``tts-gateway serve`` with the given ``logging.format``; its output (the log,
    and the banner it prints) is ``gw.log()``."""
    started: list[GatewayProcess] = []

    async def start(fmt: str = "text") -> GatewayProcess:
        gw = GatewayProcess(tmp_path, serve_log_config(free_port(), fmt))
        started.append(gw)
        await gw.wait_ready()
        return gw

    try:
        yield start
    finally:
        for gw in started:
            await gw.close()


async def until_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE,
                                                aiohttp.WSMsgType.CLOSED):
            pass


def twilio_start(call_sid: str, stream_sid: str = "MZ0001", **parameters: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                       "start": {"accountSid": "AC0", "streamSid": stream_sid,
                                 "callSid": call_sid, "tracks": ["inbound"],
                                 "customParameters": parameters,
                                 "mediaFormat": {"encoding": "audio/x-mulaw",
                                                 "sampleRate": 8000, "channels": 1}}})


async def twilio_call(gw: GatewayProcess, call_sid: str, messages, *, before_start=(),
                      until: str = " ended: ", stream_sid: str = "MZ0001",
                      **parameters: str) -> None:
    """A Twilio stream that sends ``before_start``, starts ``call_sid``, sends ``messages``,
    stops, and waits for the gateway to log ``until`` (the end of the call; "refused" for a
    start the gateway refuses)."""
    before = gw.log().count(until)
    async with gw.session.ws_connect(f"{gw.ws_url}/v1/media/twilio") as ws:
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call"}))
        for message in before_start:
            await ws.send_str(message)
        await ws.send_str(twilio_start(call_sid, stream_sid, **parameters))
        for message in messages:
            await ws.send_str(message)
        await ws.send_str(json.dumps({"event": "stop", "streamSid": stream_sid}))
        await until_closed(ws)
    deadline = time.monotonic() + 20
    while gw.log().count(until) <= before:
        assert time.monotonic() < deadline, gw.log()[-3000:]
        await asyncio.sleep(0.05)


async def test_a_call_sid_with_a_newline_forges_no_log_line(serve):
    gw = await serve()
    nasty = f"\n{FORGED}\r\n{FORGED}\u2028{FORGED}\x1b[2J"
    # a call id with control characters is refused at start (gateway/carriers/base.py)...
    await twilio_call(gw, f"CA1{nasty}", [], until="refused")
    # ... and every other value from the carrier reaches the log escaped
    await twilio_call(gw, "CA2", ["not json", json.dumps({"event": f"x{nasty}"})],
                      before_start=[json.dumps({"event": f"y{nasty}"})],
                      stream_sid=f"MZ2{nasty}", tenant=f"acme{nasty}")
    text = gw.log()
    print(f"\nlog: {len(text.encode())} bytes, {len(text.splitlines())} lines")
    assert "malformed" in text and "started" in text and "refused" in text
    assert not [line for line in text.splitlines() if line.startswith("FORGED")]
    assert "\x1b" not in text and "\u2028" not in text
    assert "MZ2\\nFORGED" in text  # the stream id is still there, escaped


async def test_a_huge_call_id_and_bad_frames_write_kilobytes_not_megabytes(serve):
    gw = await serve()
    call_sid = "CA" + "x" * 200_000
    bad = [json.dumps({"event": "y" * 50_000, "n": i}) if i % 2 else "z" * 50_000
           for i in range(100)]
    before = len(gw.log().encode())
    # malformed messages before the start, then a start whose id is refused for its size
    await twilio_call(gw, call_sid, [], before_start=bad, until="refused")
    written = len(gw.log().encode()) - before
    lines = gw.log().splitlines()
    print(f"\n200 KB call id + 100 bad frames: {written} bytes of log, "
          f"longest line {max(map(len, lines))} chars")
    assert written < 50_000
    assert re.search(r"more malformed (not_json|unknown_event) lines suppressed", gw.log())


def _suppressed_total(text: str, kind: str) -> tuple[int, int]:
    """(warning lines of ``kind``, what they and the summary say was suppressed)."""
    logged = re.findall(rf"malformed {kind} message, dropped.*", text)
    noted = sum(int(n) for n in re.findall(r"\((\d+) more like this suppressed\)", text))
    summed = sum(int(n) for n in re.findall(rf"(\d+) more malformed {kind} lines suppressed",
                                            text))
    return len(logged), noted + summed


async def test_twenty_thousand_bad_messages_write_a_few_warnings_and_a_count(serve):
    gw = await serve()
    before = len(gw.log().encode())
    await twilio_call(gw, "CA20000", ["not json"] * 20_000)
    text = gw.log()
    logged, suppressed = _suppressed_total(text, "not_json")
    print(f"\n20,000 bad messages: {logged} warning lines, {suppressed} suppressed, "
          f"{len(text.encode()) - before} bytes of log")
    assert logged < 20
    assert logged + suppressed == 20_000


async def test_json_format_one_object_per_line_with_the_call_fields(serve):
    gw = await serve("json")
    await twilio_call(gw, "CA-json", ["not json"] * 3, route="bot", tenant=f"t\n{FORGED}")
    banner, _, log = gw.log().partition("; control: /v1/calls\n")  # printed on stdout
    assert banner.startswith("======== Running on") and banner.count("\n") == 1
    lines = log.splitlines()
    print(f"\njson log: {len(lines)} lines")
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    call_lines = [e for e in entries if e.get("call_id") == "CA-json"]
    assert any("malformed not_json" in e["message"] for e in call_lines)
    assert any("started" in e["message"] for e in call_lines)
    assert all(e["carrier"] == "twilio" and e["route"] == "bot" for e in call_lines)
    assert not [line for line in lines if line.startswith("FORGED")]


# ---- the pieces, in process ----------------------------------------------------------


def test_clip_escapes_every_line_break_and_cuts_long_values():
    assert logs.clip("a\nb\rc\x1b[0m\u2028\u0085\u202e") == "a\\nb\\rc\\x1b[0m\\u2028\\x85\\u202e"
    long = logs.clip("x" * 100_000)
    assert len(long) < 300 and long.endswith("(100000 chars)")


def test_the_text_formatter_keeps_numbers_and_leaves_the_record_alone():
    stream = io.StringIO()
    handler = logs.setup("INFO", "text", stream)
    try:
        record_args = ("CA\nFORGED", 3, 1.5)
        logging.getLogger("t").warning("call %s: %d frames, %.1f s %r", *record_args, "r\n")
        logging.getLogger("t").warning(f"an f-string with {'y' * 5000}\nFORGED")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "call CA\\nFORGED: 3 frames, 1.5 s 'r\\n'" in lines[0]
    assert len(lines[1]) < logs.MAX_MESSAGE_CHARS + 100


def test_rate_limited_log_counts_what_it_suppresses():
    now = [0.0]
    stream = io.StringIO()
    logger = logging.getLogger("t.limited")
    handler = logs.setup("INFO", "text", stream)
    try:
        limited = logs.RateLimitedLog(logger, burst=3, interval=10.0, clock=lambda: now[0])
        shown = [limited.warning("bad", "bad %d", i) for i in range(10)]
        now[0] = 11.0
        shown.append(limited.warning("bad", "bad %d", 10))  # carries the 7 before it
        shown += [limited.warning("bad", "bad %d", i) for i in range(11, 13)]
        assert limited.flush("call X") == 2
    finally:
        logging.getLogger().removeHandler(handler)
    assert shown == [True] * 3 + [False] * 7 + [True] + [False] * 2
    lines = stream.getvalue().splitlines()
    assert "bad 10 (7 more like this suppressed)" in lines[3]
    assert lines[4].endswith("call X: 2 more bad lines suppressed")
