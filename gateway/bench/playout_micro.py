"""A deterministic microbenchmark of the outbound path's per-frame work, without sockets.

``calls`` Twilio calls each get 100 ms of μ-law every fifth tick (cut into 20 ms frames by
the framer, as provider audio is) and the media clock's tick body pumps them all
``ticks`` times; the sink is the real WebSocket one over a transport that discards the
bytes. What it measures is the gateway's own Python work per frame (framing, queueing,
pacing, media message, WebSocket frame), not the kernel's: run it under
``valgrind --tool=callgrind`` for instruction counts that a loaded machine does not move,
or plain for the best of ``--repeat`` wall-clock runs.

    python -m gateway.bench.playout_micro [--calls 300] [--ticks 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from telcodecs import Framer

from gateway.core.playout import MediaClock, Playout
from gateway.carriers.twilio.protocol import TwilioProtocol
from gateway.http.wsframe import WebSocketSink
from gateway.metrics import Metrics

PERIOD = 0.020
CHUNK_BYTES = 800  # 100 ms of μ-law/8000, as a provider sends it
AHEAD_CHUNKS = 10  # a second queued: the playout writes every frames_per_write ticks


class _Transport:
    """Keeps a digest of what was written, so that two builds can be compared."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.digest.update(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _WebSocket:
    closed = False


class _Request:
    def __init__(self, transport):
        self.transport = transport


def _started_protocol(index: int) -> TwilioProtocol:
    protocol = TwilioProtocol()
    protocol.receive_text(json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": f"MZ{index:032d}",
        "start": {"streamSid": f"MZ{index:032d}", "callSid": f"CA{index:032d}",
                  "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                  "channels": 1}}}))
    return protocol


def run(calls: int, ticks: int) -> tuple[float, _Transport]:
    clock = MediaClock(Metrics())
    transport = _Transport()
    # stand-ins with only what the sink touches
    sink = WebSocketSink(_WebSocket(), _Request(transport))  # type: ignore[arg-type]
    audio = bytes(range(256)) * 4  # 1024 bytes: chunks that leave a remainder in the framer
    chunk = audio[:CHUNK_BYTES]
    players = []
    for index in range(calls):
        playout = Playout(clock, sink.write, sink.backlog, _started_protocol(index).media_message,
                          lead=0.1, carrier="twilio", on_error=lambda exc: None,
                          frames_per_write=3)
        framer = Framer(160, 0xFF)
        players.append((playout, framer))
        playout.begin_utterance()
        for _ in range(AHEAD_CHUNKS):  # the provider runs ahead of real time
            playout.extend(framer.push(chunk))
    started = time.perf_counter()
    for tick in range(ticks):
        now = tick * PERIOD
        if tick % 5 == 0:
            for playout, framer in players:
                playout.extend(framer.push(chunk))
        for playout in tuple(clock._active):
            playout.pump(now)
        clock.flush_counters()
    return time.perf_counter() - started, transport


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    runs = [run(args.calls, args.ticks) for _ in range(max(1, args.repeat))]
    best = min(seconds for seconds, _ in runs)
    transport = runs[-1][1]
    frames = args.calls * args.ticks
    print(f"{args.calls} calls x {args.ticks} ticks: best {best * 1e3:.1f} ms, "
          f"{best / frames * 1e6:.3f} us per frame, {transport.writes} writes, "
          f"sha256 {transport.digest.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
