"""The control socket can listen (issue 13): the caller's audio reaches a bot's socket,
through the real server and the carrier simulators.

The simulated caller sends a known signal (band-limited noise, longer than the call, so
every stretch of it is unique): what the listener gets must be one unbroken stretch of it,
byte for byte where no conversion is needed (μ-law to ``mulaw/8000``, L16 to the same L16)
and otherwise the same signal (correlation >= 0.99 with ``scipy.signal.resample_poly``'s
ideal band-limited conversion, second by second, at one fixed lag: a gap or a repeated
packet anywhere would break the alignment from there on).
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time

import aiohttp
import numpy as np
import pytest
from scipy.signal import correlate, firwin, lfilter, resample_poly
from telcodecs import StreamResampler, ulaw_decode, ulaw_encode

from gateway.http.keys import CALLS, TCP_LISTENERS
from gateway.sim.carriers import make_call
from tests.conftest import base_config, running_gateway
from tests.e2e.test_twilio_call import metric_value

SIGNAL_SECONDS = 40  # longer than any call here: the loop never wraps


def band_limited_noise(rate: int, seconds: float = SIGNAL_SECONDS, seed: int = 13) -> bytes:
    """s16le noise in 200-3000 Hz at about -15 dBFS: inside every format's band."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(round(rate * seconds))
    band = lfilter(firwin(255, [200, 3000], pass_zero=False, fs=rate), 1, noise)
    band *= 0.18 * 32767 / np.sqrt(np.mean(band ** 2)) / 1.0
    return np.clip(band, -32767, 32767).astype("<i2").tobytes()


def wire_signal(fmt: str) -> tuple[bytes, bytes]:
    """(what the carrier sends, its s16le decoding) for ``encoding/rate``."""
    encoding, rate = fmt.split("/")
    pcm = band_limited_noise(int(rate))
    if encoding == "mulaw":
        wire = ulaw_encode(pcm)
        return wire, ulaw_decode(wire)
    return pcm, pcm


@pytest.fixture(scope="module")
def listen_config() -> dict:
    data = base_config()
    data["providers"] = {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20,
                                  "chars_per_second": 15}}
    data["routes"] = {"quiet": {"provider": "fake"}}
    data["default_route"] = "quiet"
    data["carriers"] = {name: {} for name in ("twilio", "vonage", "exotel", "plivo")}
    data["carriers"]["audiosocket"] = {"host": "127.0.0.1", "port": 0, "route": "quiet"}
    return data


@pytest.fixture
async def gw(listen_config):
    async with running_gateway(listen_config) as gateway:
        yield gateway


def dial(gw, carrier: str, fmt: str, wire: bytes):
    if carrier == "audiosocket":
        port = gw.app[TCP_LISTENERS]["audiosocket"].sockets[0].getsockname()[1]
        return make_call(carrier, f"tcp://127.0.0.1:{port}", media_format=fmt,
                         inbound_audio=wire)
    return make_call(carrier, gw.ws_url, route="quiet", media_format=fmt, inbound_audio=wire)


async def wait_for_call(gw, call_id: str):
    async with asyncio.timeout(10):
        while call_id not in gw.app[CALLS]:
            await asyncio.sleep(0.01)
    return gw.app[CALLS][call_id]


class Listener:
    """A bot's control socket that keeps every binary packet and every event."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.packets: list[bytes] = []
        self.events: list[dict] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, gw, call_id: str, query: str = "") -> Listener:
        ws = await gw.session.ws_connect(f"{gw.ws_url}/v1/calls/{call_id}/control{query}")
        return cls(ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.packets.append(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))

    async def event(self, kind: str, timeout: float = 10.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event["type"] == kind:
                        self.events.remove(event)
                        return event
                await asyncio.sleep(0.01)

    async def wait_audio(self, seconds: float, bytes_per_second: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while sum(map(len, self.packets)) < seconds * bytes_per_second:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    @property
    def audio(self) -> bytes:
        return b"".join(self.packets)


def ideal_conversion(pcm: bytes, in_rate: int, out_rate: int) -> np.ndarray:
    """``pcm`` at ``out_rate`` as an ideal band-limited resampler makes it, delayed as the
    gateway's resampler delays it (whole samples at ``in_rate * up``, where the filter
    runs; at the output rate the delay can be a fraction of a sample)."""
    source = np.frombuffer(pcm, "<i2").astype(float)
    if in_rate == out_rate:
        return source
    common = math.gcd(in_rate, out_rate)
    up, down = out_rate // common, in_rate // common
    delay = round(StreamResampler(in_rate, out_rate).delay_seconds * in_rate * up)
    upsampled = resample_poly(source, up, 1) if up > 1 else source
    delayed = np.concatenate([np.zeros(delay), upsampled])
    return resample_poly(delayed, 1, down) if down > 1 else delayed


def assert_unbroken_copy(got: bytes, wire: bytes, frame_bytes: int) -> int:
    """``got`` is one stretch of ``wire``, starting at a carrier frame; returns the frame."""
    start = wire.find(got[:frame_bytes * 4])
    assert start >= 0 and start % frame_bytes == 0, "the first packets are not the caller's"
    assert got == wire[start:start + len(got)], "a gap, a repeat or a changed byte"
    return start // frame_bytes


def assert_same_signal(got_pcm: bytes, reference: np.ndarray, rate: int) -> tuple[int, float]:
    """``got_pcm`` is ``reference`` from one lag on, second by second; returns the lag and
    the worst second's correlation."""
    got = np.frombuffer(got_pcm, "<i2").astype(float)
    probe = got[rate // 10: rate // 10 + rate // 2]  # after the resampler's first taps
    lag = int(np.argmax(correlate(reference, probe, mode="valid", method="fft"))) - rate // 10
    assert lag >= 0
    worst = 1.0
    for start in range(rate // 10, len(got) - rate // 2, rate):
        piece = got[start:start + rate]
        ref = reference[lag + start: lag + start + len(piece)]
        worst = min(worst, float(np.corrcoef(piece, ref)[0, 1]))
    assert worst >= 0.99, f"correlation {worst:.4f} in some second"
    return lag, worst


# (carrier, format it streams, format the bot asks for, packet_ms)
CASES = [
    ("twilio", "mulaw/8000", "l16/16000", 20),
    ("twilio", "mulaw/8000", "l16/8000", 40),
    ("vonage", "l16/16000", "mulaw/8000", 20),
    ("vonage", "l16/16000", "l16/16000", 60),
    ("vonage", "l16/8000", "l16/16000", 20),
    ("exotel", "l16/8000", "l16/16000", 20),
    ("exotel", "l16/24000", "l16/16000", 100),
    ("plivo", "l16/8000", "l16/16000", 20),
    ("plivo", "mulaw/8000", "mulaw/8000", 200),
    ("audiosocket", "l16/8000", "l16/16000", 20),
    ("audiosocket", "l16/8000", "l16/8000", 20),
]


@pytest.mark.parametrize("carrier, inbound, audio, packet_ms", CASES,
                         ids=[f"{c}-{i}-to-{a}-{p}ms" for c, i, a, p in CASES])
async def test_the_callers_audio_reaches_a_listening_socket(gw, carrier, inbound, audio,
                                                            packet_ms):
    wire, wire_pcm = wire_signal(inbound)
    out_encoding, out_rate = audio.split("/")
    out_rate = int(out_rate)
    width = 2 if out_encoding == "l16" else 1
    async with dial(gw, carrier, inbound, wire) as sim:
        await wait_for_call(gw, sim.call_id)
        listener = await Listener.open(gw, sim.call_id,
                                       f"?audio={audio}&packet_ms={packet_ms}")
        started = await listener.event("call.started")
        assert started["audio"] == {"format": audio, "packet_ms": packet_ms}
        encoding, rate = inbound.split("/")
        assert started["media_format"] == {"encoding": encoding, "sample_rate": int(rate)}
        assert started["seq"] == 1
        await listener.wait_audio(2.5, out_rate * width, timeout=15)
        await listener.close()
    packet_bytes = out_rate * width * packet_ms // 1000
    assert {len(p) for p in listener.packets} == {packet_bytes}
    if (encoding, int(rate)) == (out_encoding, out_rate):
        frame = sim.inbound_frame_bytes
        first = assert_unbroken_copy(listener.audio, wire, frame)
        print(f"\n{carrier} {inbound} -> {audio}: byte for byte from frame {first}, "
              f"{len(listener.packets)} packets")
        return
    got = listener.audio if out_encoding == "l16" else ulaw_decode(listener.audio)
    reference = ideal_conversion(wire_pcm, int(rate), out_rate)
    lag, worst = assert_same_signal(got, reference, out_rate)
    print(f"\n{carrier} {inbound} -> {audio}: {len(listener.packets)} packets, lag "
          f"{lag} samples, worst second's correlation {worst:.5f}")


async def test_a_long_call_loses_no_packet_and_repeats_none(gw):
    """20 s of μ-law from Twilio to a ``mulaw/8000`` listener: byte for byte, one packet
    per 20 ms the carrier sent, none missing at the end."""
    wire, _ = wire_signal("mulaw/8000")
    seconds = 20
    async with dial(gw, "twilio", "mulaw/8000", wire) as sim:
        await wait_for_call(gw, sim.call_id)
        listener = await Listener.open(gw, sim.call_id, "?audio=mulaw/8000")
        await listener.event("call.started")
        began = time.monotonic()
        await listener.wait_audio(seconds, 8000, timeout=seconds + 20)
        sent = sim.result.inbound_frames_sent
        await asyncio.sleep(0.3)  # what is on its way arrives
        got = len(listener.packets)
        elapsed = time.monotonic() - began
        await listener.close()
    first = assert_unbroken_copy(listener.audio, wire, 160)
    assert {len(p) for p in listener.packets} == {160}
    # every frame from the first the listener got up to those sent before the check
    assert got >= sent - first, f"{sent - first} frames sent since the listener began, {got} got"
    print(f"\nlong call: {got} packets in {elapsed:.1f} s ({got * 0.02:.1f} s of audio), "
          f"first frame {first}, {sent} frames sent by then")


async def test_listen_by_message_several_listeners_and_stop(gw):
    wire, _ = wire_signal("l16/16000")
    async with dial(gw, "vonage", "l16/16000", wire) as sim:
        await wait_for_call(gw, sim.call_id)
        quiet = await Listener.open(gw, sim.call_id)
        assert (await quiet.event("call.started"))["audio"] is None
        loud = await Listener.open(gw, sim.call_id, "?audio=l16/16000")
        await quiet.ws.send_json({"type": "listen", "audio": "mulaw/8000", "packet_ms": 40})
        accepted = await quiet.event("listen.accepted")
        assert accepted["audio"] == {"format": "mulaw/8000", "packet_ms": 40}
        await quiet.wait_audio(1, 8000, timeout=10)
        await loud.wait_audio(1, 32000, timeout=10)
        await quiet.ws.send_json({"type": "listen", "audio": None})
        assert (await quiet.event("listen.accepted"))["audio"] is None
        stopped_at = len(quiet.packets)
        await quiet.ws.send_json({"type": "listen", "audio": "opus/48000"})
        error = await quiet.event("error")
        assert error["kind"] == "bad_request" and error["message"].startswith("audio")
        await asyncio.sleep(0.5)
        assert len(quiet.packets) == stopped_at  # nothing after listen.accepted
        assert {len(p) for p in quiet.packets} == {320}
        assert_unbroken_copy(loud.audio, wire, 640)
        await quiet.close()
        await loud.close()
    async with gw.session.get(f"{gw.http_url}/v1/calls/x/control?audio=l16/16000") as resp:
        assert resp.status == 404


async def test_a_bad_listen_query_is_refused_before_the_upgrade(gw):
    wire, _ = wire_signal("mulaw/8000")
    async with dial(gw, "twilio", "mulaw/8000", wire) as sim:
        await wait_for_call(gw, sim.call_id)
        for query in ("?audio=opus", "?audio=l16/16000&packet_ms=30", "?packet_ms=" + "9" * 2000,
                      "?audio=" + "x" * 2000):
            async with gw.session.get(f"{gw.http_url}/v1/calls/{sim.call_id}/control{query}",
                                      headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                               "Sec-WebSocket-Version": "13",
                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
                                      ) as resp:
                assert resp.status == 400, query
                assert len((await resp.json())["error"]["message"]) < 400


async def _stalled_listener(port: int, path: str) -> socket.socket:
    """A WebSocket client that upgrades and then reads nothing (tiny receive buffer)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_slow_listener_loses_audio_counted_and_nothing_else_waits(gw):
    """One listener stops reading: its audio is dropped and counted once the socket's
    buffers are full; a second listener still gets every byte, the call's speech plays."""
    wire, _ = wire_signal("mulaw/8000")
    async with dial(gw, "twilio", "mulaw/8000", wire) as sim:
        await wait_for_call(gw, sim.call_id)
        healthy = await Listener.open(gw, sim.call_id, "?audio=mulaw/8000")
        stalled = await _stalled_listener(gw.port,
                                          f"/v1/calls/{sim.call_id}/control?audio=l16/16000")
        try:
            status, body = await gw.post_json(f"/v1/calls/{sim.call_id}/speak", {
                "text": "This sentence plays while one bot has stopped reading its socket. " * 4})
            assert status == 202
            speech_id = body["speech_id"]
            dropped = 0.0
            async with asyncio.timeout(40):
                while dropped < 0.5:
                    await asyncio.sleep(0.5)
                    dropped = metric_value(await gw.metrics_text(),
                                           "tts_gateway_bot_audio_dropped_seconds_total",
                                           reason="slow_reader")
            call = gw.app[CALLS][sim.call_id]
            await healthy.ws.send_json({"type": "interrupt"})
            assert (await healthy.event("interrupt.done"))["interrupted"] == 1
            done = await healthy.event("speech.done")
            assert done["speech_id"] == speech_id and done["cause"] == "api"
            result = sim.result
        finally:
            stalled.close()
        await healthy.close()
    first = assert_unbroken_copy(healthy.audio, wire, 160)
    print(f"\nslow listener: {dropped:.2f} s of its audio dropped; the healthy one got "
          f"{len(healthy.packets)} packets unbroken from frame {first}; the caller heard "
          f"{len(result.frames)} frames, {result.underruns} underruns; "
          f"call frames_sent {call.playout.frames_sent}")
    assert result.frames, "the call's speech did not play"


async def test_barge_in_and_speak_settings_by_message(gw):
    wire, _ = wire_signal("mulaw/8000")
    async with dial(gw, "twilio", "mulaw/8000", wire) as sim:
        call = await wait_for_call(gw, sim.call_id)
        bot = await Listener.open(gw, sim.call_id)
        await bot.ws.send_json({"type": "barge_in", "mode": "any", "min_speech_ms": 300})
        accepted = await bot.event("barge_in.accepted")
        assert (accepted["mode"], accepted["min_speech_ms"]) == ("any", 300)
        assert call.barge_in.mode == "any" and call.barge_in.min_speech_ms == 300
        for bad in ({"min_speech_ms": 10}, {"min_silence_ms": 99_999}, {"mode": "loud"}):
            await bot.ws.send_json({"type": "barge_in", **bad})
            assert (await bot.event("error"))["kind"] == "bad_request"
        assert call.barge_in.min_speech_ms == 300  # unchanged by the refusals
        await bot.ws.send_json({"type": "speak", "text": "A notice you must hear out.",
                                "provider": "fake", "interruptible": False, "flush": True})
        speech_id = (await bot.event("speak.accepted"))["speech_id"]
        utt = next(u for u in call._queued if u.id == speech_id)
        assert (utt.provider, utt.interruptible, utt.source) == ("fake", False, "stream")
        await bot.close()


async def _serve_on(call, **options):
    """A loopback server whose one socket speaks the bot protocol for ``call`` (what the
    dialer does from the client side); returns (runner, url, the seqs it returned)."""
    from aiohttp import web

    from gateway.bot.channel import serve_bot_socket
    from gateway.http.loopback import serve_on_loopback

    returned: list[int] = []

    async def handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        since = request.query.get("since")
        returned.append(await serve_bot_socket(call, ws, since_seq=int(since) if since else None,
                                               **options))
        return ws

    app = web.Application()
    app.router.add_get("/bot", handler)
    runner, port = await serve_on_loopback(app)
    return runner, f"ws://127.0.0.1:{port}/bot", returned


async def test_a_bot_that_comes_back_gets_the_events_it_missed_in_order(gw):
    wire, _ = wire_signal("mulaw/8000")
    async with dial(gw, "twilio", "mulaw/8000", wire) as sim:
        call = await wait_for_call(gw, sim.call_id)
        runner, url, returned = await _serve_on(call, audio="l16/8000", packet_ms=40)
        try:
            first = Listener(await gw.session.ws_connect(url))
            started = await first.event("call.started")
            assert started["seq"] == 1 and started["audio"] == {"format": "l16/8000",
                                                                 "packet_ms": 40}
            await first.wait_audio(0.2, 16000, timeout=10)
            await sim.send_dtmf("12")
            await first.event("dtmf")
            await first.event("dtmf")
            await first.close()
            async with asyncio.timeout(5):
                while not returned:
                    await asyncio.sleep(0.01)
            last = returned[0]
            assert last == call.events.seq
            await sim.send_dtmf("345")  # while no bot is connected
            async with asyncio.timeout(5):
                while call.events.seq < last + 3:
                    await asyncio.sleep(0.01)
            again = Listener(await gw.session.ws_connect(f"{url}?since={last}"))
            missed = [await again.event("dtmf") for _ in range(3)]
            assert [e["digit"] for e in missed] == ["3", "4", "5"]
            assert [e["seq"] for e in missed] == [last + 1, last + 2, last + 3]
            assert not any(e["type"] == "call.started" for e in again.events)
            await again.wait_audio(0.2, 16000, timeout=10)
            assert {len(p) for p in again.packets} == {640}
            await again.close()
        finally:
            await runner.cleanup()
