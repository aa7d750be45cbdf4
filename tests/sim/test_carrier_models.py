"""The simulated carriers' sans-I/O models, on a fake clock: what each carrier does with
what the gateway sends (validation, playout, marks, clears, limits)."""

import base64
import hashlib
import hmac
import json
import struct

import numpy as np
import pytest
from telcodecs import alaw_encode, ulaw_decode, ulaw_encode

from gateway.carriers.asterisk.sim import AsteriskModel
from gateway.carriers.audiosocket.sim import (KIND_AUDIO, KIND_DTMF, KIND_HANGUP,
                                              AudioSocketModel, tlv)
from gateway.carriers.exotel.sim import ExotelModel
from gateway.carriers.plivo.sim import PlivoModel, plivo_signature_v3
from gateway.carriers.telnyx.sim import TelnyxModel
from gateway.carriers.vonage.sim import VonageModel, vonage_jwt
from gateway.sim.carriers.auth import auth_headers, basic_auth
from gateway.sim.carriers.formats import WireFormat
from gateway.sim.carriers.model import Echo, EndCall, Notice
from gateway.sim.carriers.playout import Playout
from gateway.sim.carriers.result import CarrierCallResult

MULAW = WireFormat("mulaw", 8000)
L16_8K = WireFormat("l16", 8000)
L16_16K = WireFormat("l16", 16000)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def echoes(outputs) -> list[str]:
    return [o.name for o in outputs if isinstance(o, Echo)]


def notices(outputs) -> list[str]:
    return [o.kind for o in outputs if isinstance(o, Notice)]


def codes(model) -> list[str]:
    return [code for code, _ in model.violations]


def tone_pcm(seconds: float, rate: int, hz: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


# ---- the shared playout --------------------------------------------------------------


def test_playout_drains_at_the_formats_byte_rate():
    playout = Playout(L16_16K.bytes_per_second, now=5.0)
    playout.queue_audio(bytes(range(256)) * 125, 5.0)  # 32000 B = 1 s at 16 kHz
    playout.play_until(5.25)
    assert len(playout.heard) == 8000
    assert playout.next_deadline() == pytest.approx(6.0)
    playout.play_until(6.0)
    assert bytes(playout.heard) == bytes(range(256)) * 125
    assert not playout.playing and playout.heard_segments == [(5.0, 32000)]


def test_playout_clear_echoes_or_drops_pending_marks():
    for policy, echoed, dropped in (("echo", ["a"], []), ("drop", [], ["a"])):
        playout = Playout(8000, marks_on_clear=policy)
        playout.queue_audio(b"\x01" * 8000, 0.0)
        assert playout.queue_mark("a", 0.0) == []
        playout.play_until(0.5)
        assert [m.name for m in playout.clear_queue(0.5)] == echoed
        assert [name for _, name in playout.marks_dropped] == dropped
        assert len(playout.heard) == 4000 and playout.cleared_bytes == 4000


def test_playout_counts_a_gap_inside_an_utterance_but_not_after_a_boundary():
    playout = Playout(8000)
    playout.queue_audio(b"\x01" * 160, 0.0)
    playout.play_until(0.05)
    playout.queue_audio(b"\x01" * 160, 0.05)  # ran dry at 0.02: a 30 ms hole
    playout.play_until(0.2)
    playout.boundary()
    playout.queue_audio(b"\x01" * 160, 0.2)
    assert playout.underrun_gaps == [(pytest.approx(0.02), pytest.approx(0.03))]
    assert playout.utterance_starts == [0, 2]


def test_when_buffered_at_most_is_reached():
    playout = Playout(8000)
    playout.queue_audio(bytes(1600), 1.0)
    deadline = playout.when_buffered_at_most(799)
    assert deadline == pytest.approx(1.10013, abs=1e-4)
    playout.play_until(deadline)
    assert playout.buffered_bytes <= 799
    assert playout.when_buffered_at_most(2000) is None


# ---- Telnyx ------------------------------------------------------------------------


def telnyx_media(payload: bytes) -> str:
    return json.dumps({"event": "media", "media": {"payload": b64(payload)}})


def test_telnyx_echoes_a_mark_at_once_when_nothing_is_queued():
    model = TelnyxModel(MULAW)
    assert echoes(model.receive_text('{"event":"mark","mark":{"name":"idle"}}', 1.0)) == ["idle"]
    model.receive_text(telnyx_media(bytes(800)), 1.0)  # 100 ms
    assert model.receive_text('{"event":"mark","mark":{"name":"after"}}', 1.0) == []
    assert echoes(model.advance(1.099)) == []
    assert echoes(model.advance(1.1)) == ["after"]
    assert model.violations == []


def test_telnyx_clear_stops_playout_and_echoes_every_pending_mark():
    model = TelnyxModel(MULAW)
    model.receive_text(telnyx_media(b"\x01" * 4000), 0.0)
    model.receive_text('{"event":"mark","mark":{"name":"a"}}', 0.0)
    model.receive_text(telnyx_media(b"\x02" * 4000), 0.0)
    model.receive_text('{"event":"mark","mark":{"name":"b"}}', 0.0)
    assert echoes(model.receive_text('{"event":"clear"}', 0.25)) == ["a", "b"]
    model.advance(2.0)
    assert bytes(model.heard) == b"\x01" * 2000 and model.cleared_bytes == 6000


@pytest.mark.parametrize("text, code", [
    ("not json", "100003"),
    ('{"event":"play"}', "100003"),
    ('{"event":"media","media":{}}', "100003"),
    ('{"event":"mark","mark":{"name":5}}', "100003"),
    ('{"event":"media","media":{"payload":"!!!notbase64"}}', "100004"),
])
def test_telnyx_answers_bad_messages_with_error_frames(text, code):
    model = TelnyxModel(MULAW)
    outputs = model.receive_text(text, 0.0)
    assert codes(model) == [code]
    (notice,) = outputs
    assert notice.kind == "error" and notice.detail["code"] == int(code)
    assert notice.detail["title"] == {"100003": "malformed_frame", "100004": "invalid_media"}[code]
    assert model.arrivals == []


@pytest.mark.parametrize("size, ok", [(159, False), (160, True), (8000 * 30, True),
                                      (8000 * 30 + 1, False)])
def test_telnyx_chunks_must_be_20_ms_to_30_s(size, ok):
    model = TelnyxModel(MULAW)
    model.receive_text(telnyx_media(bytes(size)), 0.0)
    assert codes(model) == ([] if ok else ["chunk_size"])
    assert model.buffered_bytes == (size if ok else 0)


def test_telnyx_rejects_binary_frames():
    model = TelnyxModel(MULAW)
    assert notices(model.receive_bytes(b"\xff" * 160, 0.0)) == ["error"]
    assert codes(model) == ["100003"]


# ---- Plivo -------------------------------------------------------------------------

SID = "stream-1"


def play_audio(payload: bytes, content_type="audio/x-mulaw", rate=8000, **extra) -> str:
    media = {"contentType": content_type, "sampleRate": rate, "payload": b64(payload)}
    return json.dumps({"event": "playAudio", "media": media, **extra})


def checkpoint(name: str, sid: str = SID) -> str:
    return json.dumps({"event": "checkpoint", "streamId": sid, "name": name})


def test_plivo_checkpoint_is_answered_only_once_played():
    model = PlivoModel(MULAW, stream_id=SID)
    model.receive_text(play_audio(bytes(1600)), 0.0)
    assert model.receive_text(checkpoint("greeting"), 0.0) == []
    assert model.advance(0.19) == []
    assert echoes(model.advance(0.2)) == ["greeting"]
    assert model.violations == []


def test_plivo_clear_drops_pending_checkpoints_without_echo_and_acks():
    model = PlivoModel(MULAW, stream_id=SID)
    model.receive_text(play_audio(bytes(8000)), 0.0)
    model.receive_text(checkpoint("cut"), 0.0)
    outputs = model.receive_text(json.dumps({"event": "clearAudio", "streamId": SID}), 0.3)
    assert echoes(outputs) == [] and notices(outputs) == ["clearedAudio"]
    assert [name for _, name in model.marks_dropped] == ["cut"]
    assert model.advance(5.0) == []
    assert len(model.heard) == 2400


@pytest.mark.parametrize("fmt, content_type, rate, code", [
    (MULAW, "audio/x-mulaw", 8000, None),
    (L16_8K, "audio/x-l16", 8000, None),
    (L16_16K, "audio/x-l16", 16000, None),
    (MULAW, "audio/x-mulaw", 16000, "content_type"),
    (L16_16K, "audio/x-l16", 24000, "content_type"),
    (MULAW, "audio/x-alaw", 8000, "content_type"),
    (MULAW, "audio/x-mulaw", "8000", "content_type"),
    (MULAW, "audio/x-l16", 8000, "format_mismatch"),
    (L16_16K, "audio/x-l16", 8000, "format_mismatch"),
])
def test_plivo_play_audio_content_types(fmt, content_type, rate, code):
    model = PlivoModel(fmt, stream_id=SID)
    model.receive_text(play_audio(bytes(640), content_type, rate), 0.0)
    assert codes(model) == ([] if code is None else [code])
    assert model.buffered_bytes == (640 if code is None else 0)


def test_plivo_requires_this_streams_id_on_checkpoint_and_clear():
    model = PlivoModel(MULAW, stream_id=SID)
    model.receive_text(json.dumps({"event": "checkpoint", "name": "x"}), 0.0)
    model.receive_text(checkpoint("x", sid="other"), 0.0)
    model.receive_text(json.dumps({"event": "clearAudio"}), 0.0)
    model.receive_text(play_audio(bytes(160), streamId="other"), 0.0)
    model.receive_text(json.dumps({"event": "stop"}), 0.0)
    assert codes(model) == ["stream_id"] * 4 + ["invalid_message"]
    assert model.marks_received == [] and model.clears == []


def test_plivo_event_that_is_not_a_string_is_a_violation():
    """An unhashable "event" (an object, a list) used to raise TypeError from the lookup."""
    model = PlivoModel(MULAW, stream_id=SID)
    model.receive_text('{"event":{"a":1},"streamId":"%s"}' % SID, 0.0)
    model.receive_text('{"event":["playAudio"]}', 0.0)
    assert codes(model) == ["invalid_message"] * 2


def test_plivo_records_send_dtmf():
    model = PlivoModel(MULAW, stream_id=SID)
    model.receive_text('{"event":"sendDTMF","dtmf":"12#"}', 2.0)
    assert model.gateway_dtmf == [(2.0, "12#")] and model.violations == []


# ---- Vonage ------------------------------------------------------------------------


def test_vonage_a_wrong_frame_size_ends_the_call():
    model = VonageModel(L16_16K)
    assert model.receive_bytes(bytes(640), 0.0) == []
    (end,) = model.receive_bytes(bytes(320), 0.01)
    assert isinstance(end, EndCall) and end.code == 1011 and not end.by_gateway
    assert "unexpected frame size 320, when required 640" in end.reason
    assert codes(model) == ["frame_size"]


def test_vonage_buffers_at_most_3072_frames():
    model = VonageModel(L16_8K)
    for _ in range(3080):
        model.receive_bytes(b"\x01\x00" * 160, 0.0)
    assert model.buffered_bytes == 3072 * 320
    assert model.dropped_bytes == 8 * 320
    assert codes(model) == ["buffer_full"]  # once per overflow
    assert len(model.arrivals) == 3080


def test_vonage_notify_comes_back_with_its_payload_when_reached():
    model = VonageModel(L16_8K)
    model.receive_bytes(bytes(320), 0.0)
    model.receive_text('{"action":"notify","payload":{"name":"utt-1","n":2}}', 0.0)
    (echo,) = model.advance(0.02)
    assert echo == Echo("utt-1", {"name": "utt-1", "n": 2})


@pytest.mark.parametrize("policy, echoed", [("drop", []), ("echo", ["utt-1"])])
def test_vonage_clear_empties_the_queue_and_acks(policy, echoed):
    model = VonageModel(L16_8K, notify_on_clear=policy)
    for _ in range(10):
        model.receive_bytes(bytes(320), 0.0)
    model.receive_text('{"action":"notify","payload":{"name":"utt-1"}}', 0.0)
    outputs = model.receive_text('{"action":"clear"}', 0.05)
    assert echoes(outputs) == echoed and notices(outputs) == ["websocket:cleared"]
    assert model.buffered_bytes == 0 and len(model.heard) == 800


def test_vonage_ignores_unknown_actions():
    model = VonageModel(L16_8K)
    model.receive_text('{"action":"pause"}', 0.0)
    model.receive_text('{"action":"notify","payload":"x"}', 0.0)
    assert codes(model) == ["invalid_message"] * 2 and model.marks_received == []


# ---- Exotel ------------------------------------------------------------------------


def exotel(event: str, sid: str = SID, **fields) -> str:
    return json.dumps({"event": event, "stream_sid": sid, **fields})


@pytest.mark.parametrize("size, ok", [(3200, True), (3520, True), (102_400, True),
                                      (2880, False), (3300, False), (102_720, False)])
def test_exotel_chunk_size_rules(size, ok):
    model = ExotelModel(L16_8K, stream_sid=SID)
    model.receive_text(exotel("media", media={"payload": b64(bytes(size))}), 0.0)
    assert codes(model) == ([] if ok else ["chunk_size"])
    assert model.buffered_bytes == (size if ok else 0)
    assert len(model.arrivals) == (1 if ok else 0)


def test_exotel_marks_echo_on_playout_and_clear_empties_the_queue():
    model = ExotelModel(L16_8K, stream_sid=SID)
    model.receive_text(exotel("media", media={"payload": b64(bytes(3200))}), 0.0)
    model.receive_text(exotel("mark", mark={"name": "m1"}), 0.0)
    model.receive_text(exotel("media", media={"payload": b64(bytes(3200))}), 0.0)
    model.receive_text(exotel("mark", mark={"name": "m2"}), 0.0)
    assert echoes(model.advance(0.2)) == ["m1"]  # 3200 B of L16 at 8 kHz: 200 ms
    assert echoes(model.receive_text(exotel("clear"), 0.3)) == ["m2"]
    assert model.buffered_bytes == 0 and len(model.heard) == 4800


def test_exotel_requires_this_stream_sid():
    model = ExotelModel(L16_8K, stream_sid=SID)
    model.receive_text(json.dumps({"event": "clear"}), 0.0)
    model.receive_text(exotel("mark", sid="other", mark={"name": "x"}), 0.0)
    assert codes(model) == ["stream_sid", "stream_sid"]
    assert model.clears == [] and model.marks_received == []


# ---- Asterisk chan_websocket -------------------------------------------------------


def test_asterisk_drops_leftover_bytes():
    model = AsteriskModel(MULAW)
    model.receive_bytes(b"\x01" * 400, 0.0)
    assert model.buffered_bytes == 320 and model.dropped_bytes == 80
    assert codes(model) == ["leftover_bytes"]
    assert model.arrivals == [(0.0, b"\x01" * 400)]


def test_asterisk_hangs_up_on_a_message_over_65500_bytes():
    model = AsteriskModel(MULAW)
    assert model.receive_bytes(bytes(65_440), 0.0) == []  # a multiple of 160 under the limit
    (end,) = model.receive_bytes(bytes(65_600), 0.0)
    assert isinstance(end, EndCall) and not end.by_gateway
    assert codes(model) == ["message_too_big"]


def test_asterisk_flow_control_thresholds():
    model = AsteriskModel(MULAW)
    outputs = []
    for _ in range(899):
        outputs += model.receive_bytes(bytes(160), 0.0)
    assert notices(outputs) == [] and model.queue_length == 899
    assert notices(model.receive_bytes(bytes(160), 0.0)) == ["MEDIA_XOFF"]
    assert notices(model.receive_bytes(bytes(160), 0.0)) == []  # sent once
    assert model.flow_paused
    # 901 frames queued: XON once fewer than 800 wait, i.e. after 102 frames have started
    deadline = model.next_deadline()
    assert deadline == pytest.approx(101 * 0.02 + 1 / 8000, abs=1e-6)
    assert notices(model.advance(deadline - 0.001)) == []
    assert notices(model.advance(deadline)) == ["MEDIA_XON"]
    assert model.queue_length == 799 and not model.flow_paused


def test_asterisk_refuses_whole_messages_once_1000_frames_are_queued():
    model = AsteriskModel(MULAW)
    for _ in range(111):
        model.receive_bytes(bytes(160 * 9), 0.0)
    assert model.queue_length == 999
    model.receive_bytes(bytes(160 * 10), 0.0)  # accepted whole: the check is before queueing
    assert model.queue_length == 1009
    model.receive_bytes(bytes(160 * 5), 0.0)
    assert model.queue_length == 1009 and model.dropped_bytes == 800
    assert codes(model) == ["queue_full"]


def test_asterisk_mark_is_processed_when_the_queue_reaches_it():
    model = AsteriskModel(L16_8K)
    model.receive_bytes(bytes(1600), 0.0)  # 100 ms of slin
    assert model.receive_text("MARK_MEDIA utt-1", 0.0) == []
    assert echoes(model.advance(0.099)) == []
    assert echoes(model.advance(0.1)) == ["utt-1"]
    assert echoes(model.receive_text("MARK_MEDIA idle", 0.2)) == ["idle"]


def test_asterisk_flush_drops_audio_and_marks_without_report():
    model = AsteriskModel(MULAW)
    model.receive_bytes(bytes(1600), 0.0)
    model.receive_text("MARK_MEDIA cut", 0.0)
    assert model.receive_text("FLUSH_MEDIA", 0.05) == []
    assert model.advance(1.0) == []
    assert model.buffered_bytes == 0 and [n for _, n in model.marks_dropped] == ["cut"]
    assert model.clears == [0.05]


def test_asterisk_commands_and_limits():
    model = AsteriskModel(MULAW)
    assert model.receive_text("MARK_MEDIA " + "x" * 120, 0.0) == []  # 131 bytes: ignored
    assert model.marks_received == []
    assert model.receive_text("ANSWER", 0.0) == []
    (status,) = model.receive_text("GET_STATUS", 0.0)
    assert status.kind == "STATUS" and status.detail["xoff_level"] == 900
    model.receive_text("NO_SUCH_COMMAND", 0.0)
    model.receive_text("PAUSE_MEDIA", 0.0)
    (end,) = model.receive_text("HANGUP", 0.0)
    assert end.by_gateway
    assert codes(model) == ["text_too_long", "unknown_command", "not_simulated"]


def test_asterisk_json_control_format():
    model = AsteriskModel(MULAW, control_format="json")
    model.receive_bytes(bytes(160), 0.0)
    model.receive_text('{"command":"MARK_MEDIA","correlation_id":"m1"}', 0.0)
    assert echoes(model.advance(0.02)) == ["m1"]
    outputs = model.receive_text("MARK_MEDIA m2", 0.1)  # plain text on a JSON channel
    assert notices(outputs) == ["ERROR"] and codes(model) == ["invalid_json"]


def test_asterisk_queue_drained_report():
    model = AsteriskModel(MULAW)
    model.receive_bytes(bytes(320), 0.0)
    model.receive_text("REPORT_QUEUE_DRAINED", 0.0)
    assert notices(model.advance(0.03)) == []
    assert notices(model.advance(0.04)) == ["QUEUE_DRAINED"]
    assert notices(model.advance(0.1)) == []


@pytest.mark.parametrize("legacy", [False, True])
def test_asterisk_records_pings_and_fragmented_messages(legacy):
    model = AsteriskModel(MULAW, legacy_hangups=legacy)
    outputs = model.receive_ping(b"x", 0.0)
    assert codes(model) == ["ping"]
    assert [type(o) for o in outputs] == ([EndCall] if legacy else [])
    model = AsteriskModel(MULAW, legacy_hangups=legacy)
    outputs = model.receive_fragmented(0.0)
    assert codes(model) == ["fragmented"]
    assert [type(o) for o in outputs] == ([EndCall] if legacy else [])


# ---- AudioSocket ------------------------------------------------------------------


def audio(n: int = 0) -> bytes:
    return tlv(KIND_AUDIO, bytes([n % 256]) * 320)


def test_audiosocket_paced_frames_are_heard_without_bursts_or_underruns():
    model = AudioSocketModel(L16_8K)
    for index in range(50):
        model.receive_bytes(audio(index), 10.0 + index * 0.02 + (0.003 if index % 2 else 0.0))
    model.advance(12.0)
    assert bytes(model.heard) == b"".join(bytes([i]) * 320 for i in range(50))
    assert model.bursts == [] and model.underruns == 0 and model.violations == []


def test_audiosocket_detects_bursts():
    model = AudioSocketModel(L16_8K)
    for index in range(5):
        model.receive_bytes(audio(index), 1.0 + index * 0.001)  # five frames in 4 ms
    assert len(model.bursts) == 4
    assert model.bursts[0] == (pytest.approx(1.001), pytest.approx(0.019))
    model.advance(2.0)
    assert len(model.heard) == 1600  # every frame is still written to the channel


def test_audiosocket_detects_underruns_but_not_pauses_between_utterances():
    model = AudioSocketModel(L16_8K, underrun_tolerance=0.005, utterance_gap=0.25)
    times = [0.0, 0.02, 0.05, 0.07, 0.5, 0.52]  # a 10 ms hole, then a 410 ms pause
    for index, t in enumerate(times):
        model.receive_bytes(audio(index), t)
    assert model.underrun_gaps == [(pytest.approx(0.04), pytest.approx(0.01))]
    assert model.utterance_starts == [0, 4] and model.bursts == []


def test_audiosocket_kinds_from_the_gateway():
    model = AudioSocketModel(L16_8K)
    model.receive_bytes(tlv(KIND_AUDIO, bytes(321)), 0.0)
    assert codes(model) == ["odd_length"] and model.buffered_bytes == 320
    (end,) = AudioSocketModel(L16_8K).receive_bytes(tlv(KIND_HANGUP), 0.0)
    assert end.by_gateway
    for message, code in ((tlv(KIND_DTMF, b"1"), "unknown_kind"), (tlv(KIND_AUDIO), "empty_audio")):
        model = AudioSocketModel(L16_8K)
        (end,) = model.receive_bytes(message, 0.0)
        assert isinstance(end, EndCall) and not end.by_gateway and codes(model) == [code]


# ---- results: decoding what was heard ---------------------------------------------


@pytest.mark.parametrize("fmt, encode", [
    (MULAW, ulaw_encode),
    (WireFormat("alaw", 8000), alaw_encode),
    (L16_16K, lambda pcm: pcm),
    (WireFormat("l16", 16000, "big"),
     lambda pcm: np.frombuffer(pcm, "<i2").astype(">i2").tobytes()),
])
def test_heard_pcm16_decodes_the_wire_format(fmt, encode):
    pcm = tone_pcm(0.1, fmt.sample_rate)
    result = CarrierCallResult("x", "c", "s", fmt, heard=encode(pcm))
    decoded = np.frombuffer(result.heard_pcm16(), "<i2").astype(float)
    reference = np.frombuffer(pcm, "<i2").astype(float)
    assert result.sample_rate == fmt.sample_rate
    assert np.corrcoef(decoded, reference)[0, 1] > 0.99


def test_heard_with_silence_fills_idle_time_in_the_wire_format():
    result = CarrierCallResult("x", "c", "s", L16_8K, heard=b"\x01\x00" * 160 * 2,
                               heard_segments=[(0.0, 320), (0.04, 320)])
    assert result.heard_with_silence() == b"\x01\x00" * 160 + bytes(320) + b"\x01\x00" * 160
    assert len(ulaw_decode(b"\xff")) == 2  # telcodecs decodes to 16-bit PCM


def test_frame_timing_uses_the_formats_byte_rate():
    frames = [(index * 0.02, bytes(640)) for index in range(10)]  # 20 ms frames at 16 kHz
    frames[5] = (0.13, bytes(640))  # 30 ms late
    result = CarrierCallResult("x", "c", "s", L16_16K, frames=frames, utterance_starts=[0])
    timing = result.frame_timing()
    assert timing.count == 10 and timing.max == pytest.approx(0.03)


# ---- credentials -------------------------------------------------------------------


def test_plivo_signature_matches_an_independent_computation():
    url = "wss://gw.example.com/v1/media/plivo/demo"
    expected = base64.b64encode(hmac.new(b"tok", f"{url}.123".encode(), hashlib.sha256).digest())
    assert plivo_signature_v3("tok", url, "123") == expected.decode()
    headers = auth_headers("plivo", "ws://gw.example.com/v1/media/plivo/demo",
                           {"auth_token": "tok", "nonce": "123"})
    assert headers == {"X-Plivo-Signature-V3": expected.decode(),
                       "X-Plivo-Signature-V3-Nonce": "123"}


def test_vonage_jwt_verifies_with_the_signature_secret():
    token = vonage_jwt("s3cret", application_id="app-1", now=1_700_000_000)
    header, claims, signature = token.split(".")

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    expected = hmac.new(b"s3cret", f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert unb64(signature) == expected
    assert json.loads(unb64(header)) == {"alg": "HS256", "typ": "JWT"}
    body = json.loads(unb64(claims))
    assert body["iat"] == 1_700_000_000 and body["exp"] > body["iat"]
    assert body["application_id"] == "app-1" and body["jti"]


def test_auth_headers_per_carrier():
    assert auth_headers("exotel", "ws://h/x", {"username": "u", "password": "p"}) == {
        "Authorization": "Basic dTpw"}
    assert basic_auth("u", "p") == "Basic dTpw"
    assert auth_headers("signalwire", "ws://h/x", {"bearer_token": "b"}) == {
        "Authorization": "Bearer b"}
    assert auth_headers("vonage", "ws://h/x", {"custom": "Token t"}) == {"Authorization": "Token t"}
    for carrier, auth in (("telnyx", {"token": "t"}), ("twilio", {"bearer_token": "b"}),
                          ("audiosocket", {"username": "u", "password": "p"})):
        with pytest.raises(ValueError, match="cannot present"):
            auth_headers(carrier, "ws://h/x", auth)


def test_audiosocket_tlv_layout():
    assert tlv(KIND_DTMF, b"5") == b"\x03\x00\x015"
    assert struct.unpack("!BH", tlv(KIND_AUDIO, bytes(320))[:3]) == (0x10, 320)
