"""The bot protocol's messages, sans I/O: every bot -> gateway message parsed into a typed
command or refused with a bounded error; the gateway -> bot frames."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.bot import protocol
from gateway.bot.protocol import (ERROR_KINDS, BargeIn, Hangup, Interrupt, Listen,
                                  MessageLimits, ProtocolError, Speak, parse_message)
from gateway.config import BOT_AUDIO_FORMATS

LIMITS = MessageLimits(max_text_chars=100, providers=("voice", "backup"))


def parse(message) -> object:
    return parse_message(json.dumps(message), LIMITS)


def refused(message, kind: str = "bad_request") -> str:
    data = message if isinstance(message, (str, bytes)) else json.dumps(message)
    with pytest.raises(ProtocolError) as info:
        parse_message(data, LIMITS)
    assert info.value.kind == kind and info.value.kind in ERROR_KINDS
    text = str(info.value)
    assert text and len(text) < 400
    return text


def test_speak_with_every_field():
    assert parse({"type": "speak", "text": "Hello"}) == Speak("Hello")
    command = parse({"type": "speak", "text": "Legal notice.", "flush": True, "voice": "v1",
                     "provider": "backup", "interruptible": False})
    assert command == Speak("Legal notice.", flush=True, voice="v1", provider="backup",
                            interruptible=False)
    assert parse({"type": "speak", "text": ""}) == Speak("")  # a bare flush, on a socket


@pytest.mark.parametrize("body, field", [
    ({"text": 5}, "text"),
    ({}, "text"),
    ({"text": "x" * 101}, "text"),
    ({"text": "a", "provider": "nope"}, "provider"),
    ({"text": "a", "provider": ["voice"]}, "provider"),
    ({"text": "a", "voice": "v" * 201}, "voice"),
    ({"text": "a", "voice": 3}, "voice"),
    ({"text": "a", "flush": "yes"}, "flush"),
    ({"text": "a", "interruptible": 0}, "interruptible"),
    ({"text": "a", "interrupt": None}, "interrupt"),
])
def test_a_bad_speak_names_its_field(body, field):
    assert refused({"type": "speak", **body}).startswith(field)


def test_http_speak_needs_text():
    with pytest.raises(ProtocolError):
        protocol.parse_speak({"text": "  "}, LIMITS, streaming=False)
    assert protocol.parse_speak({"text": "Hi", "interrupt": True}, LIMITS,
                                streaming=False).interrupt


def test_interrupt_hangup():
    assert parse({"type": "interrupt"}) == Interrupt()
    assert parse({"type": "hangup", "extra": 1}) == Hangup()  # unknown fields are ignored


def test_listen():
    assert parse({"type": "listen"}) == Listen("l16/16000", 20)
    for audio in BOT_AUDIO_FORMATS:
        assert parse({"type": "listen", "audio": audio, "packet_ms": 100}) == Listen(audio, 100)
    assert parse({"type": "listen", "audio": None}) == Listen(None, 20)
    assert Listen(None).describe() is None
    assert Listen("mulaw/8000", 40).describe() == {"format": "mulaw/8000", "packet_ms": 40}


@pytest.mark.parametrize("body", [
    {"audio": "opus/48000"}, {"audio": 16000}, {"audio": "L16/16000"},
    {"packet_ms": 10}, {"packet_ms": 30}, {"packet_ms": 220}, {"packet_ms": 20.0},
    {"packet_ms": True}, {"packet_ms": "20"}, {"packet_ms": 10 ** 30},
])
def test_a_bad_listen_is_refused(body):
    refused({"type": "listen", **body})


def test_listen_query():
    assert protocol.parse_listen_query({}) is None
    assert protocol.parse_listen_query({"audio": "mulaw/8000"}) == Listen("mulaw/8000", 20)
    assert protocol.parse_listen_query({"packet_ms": "60"}) == Listen("l16/16000", 60)
    for query in ({"audio": "x"}, {"packet_ms": "9" * 5000}, {"packet_ms": "-20"},
                  {"packet_ms": "٢٠"}, {"packet_ms": "25"}):
        with pytest.raises(ProtocolError) as info:
            protocol.parse_listen_query(query)
        assert len(str(info.value)) < 400


def test_barge_in():
    assert parse({"type": "barge_in", "mode": "speech"}) == BargeIn(mode="speech")
    command = parse({"type": "barge_in", "min_speech_ms": 300, "min_silence_ms": 500})
    assert command.changes() == {"min_speech_ms": 300, "min_silence_ms": 500}
    for body in ({}, {"mode": "loud"}, {"mode": 1}, {"min_speech_ms": "300"},
                 {"min_silence_ms": 1.5}, {"min_speech_ms": True}):
        refused({"type": "barge_in", **body})


def test_what_is_not_a_message():
    refused({"type": "dance"})
    refused({"type": ["speak"]})
    refused([1, 2])
    refused("null")
    refused("{nope")
    refused(b"\xff\xfe")
    refused("[" * 5000)
    refused("1" * 5000)
    refused(" " * (LIMITS.max_message_bytes + 1), "too_large")
    assert "'dance" in refused({"type": "dance" * 1000})  # shown, bounded


def test_frames():
    assert protocol.error("bad_request", "x") == {"type": "error", "kind": "bad_request",
                                                  "message": "x"}
    assert protocol.speak_accepted("sp_1", True) == {"type": "speak.accepted",
                                                     "speech_id": "sp_1", "flushed": True}
    assert protocol.interrupt_done(2) == {"type": "interrupt.done", "interrupted": 2}
    assert protocol.listen_accepted(Listen(None)) == {"type": "listen.accepted", "audio": None}
    assert protocol.barge_in_accepted("any", 200, 400)["mode"] == "any"
    fields = protocol.started_fields(carrier="telnyx", route="demo", stream_id="s",
                                     caller="+1", called=None, custom_parameters={"a": "b"},
                                     encoding="mulaw", sample_rate=8000)
    event = {"type": "call.started", "call_id": "c", "ts": 1.0, "seq": 1, **fields}
    frame = protocol.started_frame(event, Listen("l16/16000", 20))
    assert frame == {**event, "audio": {"format": "l16/16000", "packet_ms": 20}}
    assert frame["from"] == "+1" and frame["to"] is None
    assert frame["media_format"] == {"encoding": "mulaw", "sample_rate": 8000}
    assert protocol.started_frame(event, None)["audio"] is None


def test_the_protocol_module_does_no_io():
    code = ("import sys, gateway.bot.protocol; "
            "print(sorted(m for m in ('aiohttp', 'asyncio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
