"""The gateway's work per inbound frame of a bot call, without sockets: a microbenchmark.

Each of ``--calls`` calls gets Twilio media messages (JSON, base64 μ-law), parsed by
:class:`TwilioProtocol`, fanned out by :class:`CallerAudio` to the voice activity detector
(:class:`CallerSpeech`) and to a bot's :class:`CallerAudioFeed` (l16/16000, 20 ms packets),
whose packets are masked and written to a transport that keeps nothing (as a dialed bot's
are). ``--playing``: the gateway speaks meanwhile (the detector learns the echo path).

Wall-clock figures are noisy on a shared machine; for comparisons count instructions::

    valgrind --tool=callgrind python -m gateway.bench.botframes --seconds 1 --repeat 1
    valgrind --tool=callgrind python -m gateway.bench.botframes --seconds 3 --repeat 1

(the difference over the 100 frames per call between the two is the cost per frame).
``--digest`` prints a hash of the bytes the bots read (unmasked): equal before and after a
change that must not change them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import time
import types
from typing import Any, cast

import numpy as np
from telcodecs import ulaw_encode

from gateway.bot.audio import CallerAudioFeed
from gateway.carriers.events import MediaFormat
from gateway.carriers.twilio.protocol import TwilioProtocol
from gateway.core.bargein import CallerSpeech
from gateway.core.caller import CallerAudio
from gateway.http.wsframe import DirectFrames
from gateway.metrics import Metrics

MULAW = MediaFormat("mulaw", 8000)


class _DiscardingTransport:
    def __init__(self, keep: bool):
        self.frames: list[bytes] | None = [] if keep else None

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        if self.frames is not None:
            self.frames.append(data)


class _Playing:
    """A playout 100 ms ahead of the caller with a loud frame queued."""

    queue = [bytes(range(0, 256, 2)) + bytes(range(1, 64, 2))]

    @property
    def next_play_time(self) -> float:
        return time.monotonic() + 0.1


def _call(i: int, metrics: Metrics, *, playing: bool, keep: bool):
    stream = f"MZ{i:032x}"
    protocol = TwilioProtocol()
    protocol.receive_text(json.dumps({"event": "connected", "protocol": "Call"}))
    protocol.receive_text(json.dumps({"event": "start", "streamSid": stream, "start": {
        "callSid": f"CA{i:032x}", "streamSid": stream, "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    caller_audio = CallerAudio(MULAW)
    playout = _Playing() if playing else types.SimpleNamespace(next_play_time=0.0, queue=[])
    call = types.SimpleNamespace(
        caller_audio=caller_audio, media_format=MULAW, playout=playout,
        services=types.SimpleNamespace(clock=types.SimpleNamespace(now=time.monotonic)),
        barge_in=types.SimpleNamespace(mode="speech", min_speech_ms=140, min_silence_ms=500),
        events=types.SimpleNamespace(emit=lambda *a, **k: None), id=str(i), state="active",
        _unfinished=list)
    CallerSpeech(cast(Any, call))  # the parts of a Call it reads; subscribes itself
    feed = CallerAudioFeed(MULAW, "l16/16000", 20, on_drop=lambda s: None,
                           arrived_at=lambda: caller_audio.arrived_at)
    transport = _DiscardingTransport(keep)
    frames = DirectFrames(transport, masked=True, max_backlog=16384)
    delay = metrics.caller_audio_delay.labels("twilio")

    def send(packet: bytes, arrived: float) -> bool:  # as the bot channel's direct sender
        if not frames.send(packet):
            return False
        delay.observe(time.monotonic() - arrived)
        return True

    feed.direct = send
    caller_audio.subscribe(feed)
    return stream, protocol, caller_audio, transport


def _messages(stream: str, seconds: int, seed: int) -> list[str]:
    """A tone that comes and goes over noise, as Twilio's media messages."""
    rng = np.random.default_rng(seed)
    t = np.arange(8000 * seconds) / 8000
    voiced = np.sin(2 * np.pi * 0.4 * t) > 0.3
    pcm = rng.normal(0, 300, len(t)) + 6000 * np.sin(2 * np.pi * 300 * t) * voiced
    wire = ulaw_encode(pcm.astype("<i2").tobytes())
    return [json.dumps({"event": "media", "sequenceNumber": str(k // 160 + 2), "media": {
        "track": "inbound", "chunk": str(k // 160 + 1), "timestamp": str(k // 8),
        "payload": base64.b64encode(wire[k:k + 160]).decode()}, "streamSid": stream},
        separators=(",", ":")) for k in range(0, len(wire), 160)]


def run(calls: int, seconds: int, *, playing: bool = False, keep: bool = False):
    """Feed ``seconds`` of frames to each of ``calls`` calls; returns (µs per frame, the
    calls' transports)."""
    metrics = Metrics()
    made = [_call(i, metrics, playing=playing, keep=keep) for i in range(calls)]
    messages = [_messages(stream, 3, i) for i, (stream, *_) in enumerate(made)]
    frames = seconds * 50
    started = time.perf_counter()
    for k in range(frames):
        for (_, protocol, caller_audio, _), texts in zip(made, messages):
            caller_audio.feed(protocol.receive_text(texts[k % len(texts)]).payload)
    elapsed = time.perf_counter() - started
    return elapsed / (calls * frames) * 1e6, [transport for *_, transport in made]


def digest(transports) -> str:
    """A hash of the unmasked frames (opcode and payload) the bots would read."""
    h = hashlib.sha256()
    for transport in transports:
        for frame in transport.frames:
            size, at = frame[1] & 0x7F, 2
            if size == 126:
                at = 4
            key, body = frame[at:at + 4], frame[at + 4:]
            h.update(frame[:1] + bytes(b ^ key[i % 4] for i, b in enumerate(body)))
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the fastest is shown")
    parser.add_argument("--playing", action="store_true", help="the gateway speaks meanwhile")
    parser.add_argument("--digest", action="store_true",
                        help="print a hash of the bytes the bots read instead of timing")
    args = parser.parse_args(argv)
    if args.digest:
        _, transports = run(5, 3, playing=args.playing, keep=True)
        print(f"sha256 {digest(transports)}")
        return 0
    best = min(run(args.calls, args.seconds, playing=args.playing)[0]
               for _ in range(args.repeat))
    print(f"{best:.2f} µs per inbound frame ({args.calls} calls, {args.seconds} s, "
          f"fastest of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
