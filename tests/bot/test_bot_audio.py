"""The caller's audio for one bot (gateway/bot/audio.py) and the numbered events
(gateway/core/events.py), without a server."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from scipy.signal import resample_poly
from telcodecs import ulaw_decode, ulaw_encode

from gateway.bot.audio import CallerAudioFeed
from gateway.carriers.events import MediaFormat
from gateway.core.events import REPLAY_LIMIT, EventHub

MULAW = MediaFormat("mulaw", 8000)


def tone_pcm(seconds: float, rate: int, freqs=(440.0, 1210.0, 2790.0)) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    signal = sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)) / len(freqs)
    return (signal * 12000).astype("<i2").tobytes()


def drain(feed: CallerAudioFeed) -> list[bytes]:
    packets = []
    while feed._packets:
        packets.append(feed._packets.popleft())
    return packets


def feed_frames(feed: CallerAudioFeed, wire: bytes, frame_bytes: int) -> None:
    for start in range(0, len(wire), frame_bytes):
        feed(wire[start:start + frame_bytes])


def test_mulaw_to_mulaw_is_byte_for_byte_in_packets_of_the_size_asked():
    wire = ulaw_encode(tone_pcm(1.2, 8000))
    for packet_ms in (20, 60, 200):
        feed = CallerAudioFeed(MULAW, "mulaw/8000", packet_ms, on_drop=lambda s: None)
        feed.capacity = 10_000  # no reader here
        feed_frames(feed, wire, 160)
        packets = drain(feed)
        assert {len(p) for p in packets} == {8 * packet_ms}
        assert b"".join(packets) == wire[:len(packets) * 8 * packet_ms]


def test_mulaw_8k_to_l16_16k_is_interpolated_not_doubled():
    wire = ulaw_encode(tone_pcm(1.0, 8000))
    feed = CallerAudioFeed(MULAW, "l16/16000", 20, on_drop=lambda s: None)
    feed.capacity = 10_000
    feed_frames(feed, wire, 160)
    packets = drain(feed)
    assert len(packets) == 50 and {len(p) for p in packets} == {640}
    got = np.frombuffer(b"".join(packets), "<i2").astype(float)
    ideal = resample_poly(np.frombuffer(ulaw_decode(wire), "<i2").astype(float), 2, 1)
    delay = round(feed.delay_seconds * 16000)
    got, ideal = got[delay + 200:], ideal[200:len(got) - delay]
    corr = float(np.corrcoef(got, ideal)[0, 1])
    doubled = np.repeat(np.frombuffer(ulaw_decode(wire), "<i2").astype(float), 2)
    doubled_corr = float(np.corrcoef(doubled[200:200 + len(ideal)], ideal)[0, 1])
    print(f"\n8 -> 16 kHz: correlation {corr:.5f} with resample_poly "
          f"(sample doubling: {doubled_corr:.5f})")
    assert corr >= 0.99
    assert corr > doubled_corr


def test_a_slow_reader_loses_the_oldest_packets_counted():
    dropped = []
    feed = CallerAudioFeed(MediaFormat("l16", 16000), "l16/16000", 20, on_drop=dropped.append)
    assert feed.capacity == 50  # one second
    frames = [i.to_bytes(2, "little") * 320 for i in range(80)]
    for frame in frames:
        feed(frame)
    assert dropped == [0.02] * 30 and feed.dropped == 30
    assert drain(feed) == frames[30:]  # the newest second, in order


async def test_the_reader_waits_for_the_next_packet():
    feed = CallerAudioFeed(MULAW, "mulaw/8000", 20, on_drop=lambda s: None)
    reader = asyncio.ensure_future(feed.next_packet())
    await asyncio.sleep(0)
    assert not reader.done()
    feed(b"\x01" * 80)
    await asyncio.sleep(0)
    assert not reader.done()  # half a packet
    feed(b"\x02" * 80)
    assert await asyncio.wait_for(reader, 1) == b"\x01" * 80 + b"\x02" * 80


async def test_each_packet_carries_the_arrival_of_the_newest_frame_in_it():
    """What tts_gateway_caller_audio_delay_seconds is measured from: a 60 ms packet is as
    old as the last of its three frames, and a dropped packet takes its time with it."""
    clock = [0.0]
    feed = CallerAudioFeed(MULAW, "mulaw/8000", 60, on_drop=lambda s: None,
                           arrived_at=lambda: clock[0])

    def frames(n: int) -> None:
        for _ in range(n):
            clock[0] += 1  # the next frame arrives
            feed(b"\x01" * 160)

    frames(6)
    await feed.next_packet()
    assert feed.packet_arrived_at == 3.0
    await feed.next_packet()
    assert feed.packet_arrived_at == 6.0
    feed.capacity = 1  # a slow reader: the older packet goes, and its arrival with it
    frames(6)
    await feed.next_packet()
    assert feed.packet_arrived_at == 12.0 and feed.dropped == 1


def test_conversion_cost_per_carrier_frame():
    """Figures, not asserts (a loaded 2-core machine): µs per 20 ms carrier frame."""
    cases = [(MULAW, "mulaw/8000"), (MULAW, "l16/16000"), (MULAW, "l16/8000"),
             (MediaFormat("l16", 16000), "mulaw/8000"), (MediaFormat("l16", 16000), "l16/16000"),
             (MediaFormat("l16", 8000), "l16/16000"), (MediaFormat("l16", 24000), "l16/16000")]
    lines = []
    for source, audio in cases:
        feed = CallerAudioFeed(source, audio, 20, on_drop=lambda s: None)
        pcm = tone_pcm(1.0, source.sample_rate)
        wire = ulaw_encode(pcm) if source.encoding == "mulaw" else pcm
        frame = wire[:source.bytes_per_20ms]
        n = 2000
        started = time.perf_counter()
        for _ in range(n):
            feed(frame)
            feed._packets.clear()
        per_frame = (time.perf_counter() - started) / n * 1e6
        lines.append(f"{source.encoding}/{source.sample_rate} -> {audio}: {per_frame:.1f} µs")
    print("\nper 20 ms carrier frame: " + "; ".join(lines))


def test_events_are_numbered_and_replayed_after_a_seq():
    hub = EventHub("call-1")
    first = hub.emit("call.started", carrier="twilio")
    assert first["seq"] == 1 and hub.started is first
    for n in range(REPLAY_LIMIT + 50):
        hub.emit("mark", name=str(n))
    assert hub.seq == REPLAY_LIMIT + 51
    kept = hub.replay(0)
    assert len(kept) == REPLAY_LIMIT and kept[-1]["seq"] == hub.seq
    assert [e["seq"] for e in hub.replay(hub.seq - 3)] == [hub.seq - 2, hub.seq - 1, hub.seq]
    assert hub.replay(hub.seq) == []
    assert len(hub.history) == 20 and hub.history[-1] is kept[-1]


async def test_a_subscriber_after_the_call_ended_is_told_at_once():
    hub = EventHub("call-1")
    await hub.close()
    assert await asyncio.wait_for(hub.subscribe().get(), 1) is None


def test_packets_go_straight_to_a_socket_that_keeps_up_and_queue_in_order_behind_a_slow_one():
    """``direct`` takes a packet while the socket keeps up; once it refuses one, that
    packet and every later one queue (in order) until the sender has drained the queue."""
    sent, open_ = [], [True]
    feed = CallerAudioFeed(MULAW, "mulaw/8000", 20, on_drop=lambda s: None,
                           arrived_at=lambda: 7.0)
    feed.direct = lambda packet, arrived: open_[0] and not sent.append((packet, arrived))
    frames = [bytes([i]) * 160 for i in range(6)]
    feed(frames[0])
    feed(frames[1])
    open_[0] = False
    feed(frames[2])
    open_[0] = True  # the socket keeps up again, but a packet waits: this one queues too
    feed(frames[3])
    assert sent == [(frames[0], 7.0), (frames[1], 7.0)]
    assert drain(feed) == frames[2:4] and feed.packets == 4
    feed(frames[4])
    assert sent[-1] == (frames[4], 7.0) and not feed._packets


def test_a_masked_frame_unmasks_to_the_packet():
    from gateway.http.wsframe import masked_binary_frame

    for n in (0, 4, 5, 124, 125, 126, 128, 160, 640, 3200):  # whole 32-bit words or not
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        frame = masked_binary_frame(payload)
        assert frame[0] == 0x82 and frame[1] & 0x80  # final binary frame, masked
        size, at = frame[1] & 0x7F, 2
        if size == 126:
            size, at = int.from_bytes(frame[2:4], "big"), 4
        key, body = frame[at:at + 4], frame[at + 4:]
        assert size == n == len(body)
        assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == payload


def test_long_packets_are_converted_whole_and_carry_the_same_audio_as_short_ones():
    """A 100 ms packet is converted in one piece once its five frames are in: the same
    bytes as five 20 ms conversions (the resampler does not depend on how input is cut)."""
    wire = ulaw_encode(tone_pcm(1.0, 8000))  # the queue's second
    short = CallerAudioFeed(MULAW, "l16/16000", 20, on_drop=lambda s: None)
    long = CallerAudioFeed(MULAW, "l16/16000", 100, on_drop=lambda s: None)
    feed_frames(short, wire, 160)
    feed_frames(long, wire[:160 * 4], 160)
    assert not long._packets  # four frames: nothing converted yet
    feed_frames(long, wire[160 * 4:], 160)
    packets = drain(long)
    assert len(packets) == 10 and all(len(p) == 3200 for p in packets)
    assert b"".join(packets) == b"".join(drain(short))
