"""The helpers every provider protocol shares (gateway/tts/providers/common.py)."""

from __future__ import annotations

import pytest

from gateway.tts.providers.common import (choose_g711_or_pcm, parse_object, parse_typed_frame,
                                          remember, with_query)
from gateway.tts.providers.events import ProviderProtocolError


def test_parse_object_keeps_each_providers_error_kind():
    assert parse_object('{"a": 1}', "X frame") == {"a": 1}
    assert parse_object({"a": 1}, "X message") == {"a": 1}  # already decoded (Socket.IO)
    with pytest.raises(ProviderProtocolError) as info:
        parse_object("not json", "X frame")
    assert info.value.kind == "not_json" and "X frame is not JSON" in str(info.value)
    with pytest.raises(ProviderProtocolError) as info:
        parse_object("[1]", "X frame", kind="bad_message", expected='an object with "status"')
    assert info.value.kind == "bad_message"
    assert 'X frame is a JSON list, expected an object with "status"' in str(info.value)
    with pytest.raises(ProviderProtocolError) as info:
        parse_typed_frame('{"type": 7}', "X", kind="unknown_event")
    assert info.value.kind == "unknown_event"


def test_remember_is_bounded_and_puts_a_key_last():
    table: dict[str, None] = {}
    for key in "abcd":
        remember(table, key, limit=3)
    assert list(table) == ["b", "c", "d"]
    remember(table, "b", limit=3)
    assert list(table) == ["c", "d", "b"]


def test_choose_g711_or_pcm_with_listed_rates_or_a_range():
    names = {"pcm": "PCM", "mulaw": "ULAW", "alaw": "ALAW"}
    assert choose_g711_or_pcm("mulaw", 8000, (8000, 16000), **names) == ("ULAW", 8000)
    assert choose_g711_or_pcm("alaw", 8000, (8000, 16000), **names) == ("ALAW", 8000)
    assert choose_g711_or_pcm("pcm_s16le", 12000, (8000, 16000), **names) == ("PCM", 16000)
    assert choose_g711_or_pcm("pcm_s16le", 96000, (8000, 16000), **names) == ("PCM", 16000)
    any_rate = range(8000, 48001)
    assert choose_g711_or_pcm("pcm_s16le", 11025, any_rate, **names) == ("PCM", 11025)
    assert choose_g711_or_pcm("pcm_s16le", 4000, any_rate, **names) == ("PCM", 8000)
    assert choose_g711_or_pcm("pcm_s16le", 96000, any_rate, **names) == ("PCM", 48000)


def test_with_query_leaves_out_none_and_writes_booleans_as_the_providers_take_them():
    assert (with_query("wss://h/p", a=1, b=None, c=True, d=False, e="x y")
            == "wss://h/p?a=1&c=true&d=false&e=x+y")
    assert with_query("wss://h/p?v=1", a="2") == "wss://h/p?v=1&a=2"
