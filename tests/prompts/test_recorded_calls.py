"""Recorded prompts through the real gateway, the carrier simulators and a loopback file
server: every container and rate comes out as its tone, at its length, on μ-law, A-law
and L16 carriers; a prompt that cannot be loaded fails its ``speech.done`` with the
reason, is counted, and the call goes on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from gateway.http.loopback import serve_on_loopback
from gateway.prompts import settings
from gateway.sim.carriers import make_call
from tests.conftest import base_config, start_gateway
from tests.e2e.test_twilio_call import metric_value, open_control
from tests.prompts.tones import dominant_hz, sounding_seconds, tone_wav

FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: prompt name -> (file written or copied into prompts.dir, its tone in Hz, seconds)
WAVS = {
    "pcm8k": (tone_wav(440, 0.6, 8000), 440, 0.6),
    "pcm16k": (tone_wav(520, 0.6, 16000), 520, 0.6),
    "pcm22k": (tone_wav(610, 0.6, 22050), 610, 0.6),
    "pcm44k": (tone_wav(730, 0.6, 44100), 730, 0.6),
    "pcm48k": (tone_wav(850, 0.6, 48000, channels=2), 850, 0.6),
    "mulaw": (tone_wav(960, 0.6, 8000, "mulaw"), 960, 0.6),
    "alaw": (tone_wav(1070, 0.6, 8000, "alaw"), 1070, 0.6),
}
COMPRESSED = {  # committed fixtures (tests/prompts/fixtures/make_fixtures.py)
    "mp3": ("tone_700hz_22050.mp3", 700, 0.8),
    "mp3stereo": ("tone_900hz_44100_stereo.mp3", 900, 0.8),
    "flac": ("tone_1100hz_16000.flac", 1100, 0.8),
    "ogg": ("tone_1300hz_48000.ogg", 1300, 0.8),
}
TONES = {**{name: (hz, s) for name, (_, hz, s) in WAVS.items()},
         **{name: (hz, s) for name, (_, hz, s) in COMPRESSED.items()}}

#: (carrier, the format it streams in, the prompts played): every prompt on a μ-law and on
#: an L16 carrier; on the other formats, one of each container and the odd rates (the
#: tests' time: each prompt plays in real time)
SOME = ("pcm22k", "pcm44k", "mulaw", "mp3stereo", "flac", "ogg")
CARRIER_FORMATS = [("twilio", "mulaw/8000", tuple(TONES)), ("vonage", "l16/16000", tuple(TONES)),
                   ("telnyx", "alaw/8000", SOME), ("vonage", "l16/8000", SOME),
                   ("vonage", "l16/24000", SOME)]


def prompt_files(folder: Path) -> dict:
    items = {}
    for name, (data, _, _) in WAVS.items():
        (folder / f"{name}.wav").write_bytes(data)
        items[name] = {"file": f"{name}.wav"}
    for name, (file, _, _) in COMPRESSED.items():
        (folder / file).write_bytes((FIXTURES / file).read_bytes())
        items[name] = {"file": file}
    (folder / "corrupt.wav").write_bytes(WAVS["pcm8k"][0][:40])  # a header, no data chunk
    items["corrupt"] = {"file": "corrupt.wav"}
    (folder / "notes.wav").write_bytes(b"these are my notes, not audio\n" * 20)
    items["not_audio"] = {"file": "notes.wav"}
    items["missing"] = {"file": "gone.wav"}
    items["hello"] = {"text": "Hello there."}
    return items


async def gateway_with_prompts(tmp_path: Path, **prompts_settings):
    data = base_config()
    data["providers"] = {"fake": {"type": "fake", "handshake_ms": 0, "first_audio_ms": 20}}
    data["routes"] = {"ivr": {"provider": "fake"}}
    data["default_route"] = "ivr"
    data["carriers"] = {"twilio": {}, "telnyx": {"codec": "PCMA"}, "vonage": {}}
    data["prompts"] = {"dir": str(tmp_path), "items": prompt_files(tmp_path),
                       **prompts_settings}
    return await start_gateway(data)


@pytest.fixture
async def gateway(tmp_path):
    gw = await gateway_with_prompts(tmp_path)
    yield gw
    await gw.session.close()
    await gw.runner.cleanup()


async def play(gw, call, control, body: dict) -> tuple[dict, dict, bytes]:
    """POST play, wait for its speech.done; (started, done, what the caller heard of it
    as 16-bit PCM at the carrier's rate)."""
    before = len(call.result.heard)
    status, reply = await gw.post_json(f"/v1/calls/{call.call_id}/play", body)
    assert status == 202, reply
    started = await control.next_event("speech.started", speech_id=reply["speech_id"])
    done = await control.next_event("speech.done", speech_id=reply["speech_id"])
    result = call.result
    return started, done, result.format.to_pcm16(result.heard[before:])


@pytest.mark.parametrize("carrier, media_format, names", CARRIER_FORMATS,
                         ids=[f"{carrier}-{fmt}" for carrier, fmt, _ in CARRIER_FORMATS])
async def test_every_container_and_rate_plays_as_its_tone_at_its_length(
        gateway, carrier, media_format, names):
    async with make_call(carrier, gateway.ws_url, route="ivr", media_format=media_format) as call:
        control = await open_control(gateway, call.call_id)
        rate = call.result.sample_rate
        for name in names:
            hz, seconds = TONES[name]
            started, done, heard = await play(gateway, call, control, {"prompt": name})
            assert started["source"] == "prompt" and started["prompt"] == name
            assert done["source"] == "prompt" and done["prompt"] == name
            assert done["interrupted"] is False and "error" not in done, done
            got_hz, got_s = dominant_hz(heard, rate), sounding_seconds(heard, rate)
            print(f"{carrier} {media_format} {name}: {got_hz:.0f} Hz, {got_s:.3f} s")
            assert abs(got_hz - hz) < 0.02 * hz, (name, got_hz)
            assert abs(got_s - seconds) < 0.03, (name, got_s)
        await control.ws.close()


async def test_a_prompt_that_cannot_load_fails_with_its_reason_and_the_call_goes_on(gateway):
    async with make_call("twilio", gateway.ws_url, route="ivr") as call:
        control = await open_control(gateway, call.call_id)
        for name, kind, says in [("corrupt", "corrupt", "damaged"),
                                 ("not_audio", "not_audio", "not an audio file"),
                                 ("missing", "not_found", "no file 'gone.wav'")]:
            _, done, heard = await play(gateway, call, control, {"prompt": name})
            assert done["prompt"] == name and says in done["error"], done
            assert heard == b""
            metrics = await gateway.metrics_text()
            assert metric_value(metrics, "tts_gateway_prompt_errors_total", kind=kind) == 1
        _, done, heard = await play(gateway, call, control, {"prompt": "pcm8k"})
        assert "error" not in done and abs(sounding_seconds(heard, 8000) - 0.6) < 0.03
        _, done, heard = await play(gateway, call, control, {"prompt": "hello"})
        assert "error" not in done and heard, "a text prompt is synthesized"
        await control.ws.close()


async def test_play_requests_that_name_nothing_playable_are_refused(gateway):
    async with make_call("twilio", gateway.ws_url, route="ivr") as call:
        await open_control(gateway, call.call_id)
        path = f"/v1/calls/{call.call_id}/play"
        status, body = await gateway.post_json(path, {"prompt": "nope"})
        assert status == 404 and "no prompt named 'nope'" in body["error"]["message"]
        for bad in ({}, {"prompt": "pcm8k", "url": "https://x.test/a.wav"},
                    {"url": "http://example.com/a.wav"}, {"url": "file:///etc/passwd"},
                    {"prompt": "../pcm8k"}, {"prompt": "pcm8k", "interrupt": "yes"}, []):
            status, body = await gateway.post_json(path, bad)
            assert status == 400, (bad, body)
        status, body = await gateway.post_json("/v1/calls/CAnone/play", {"prompt": "pcm8k"})
        assert status == 404


class FileServer:
    """A loopback HTTP server: ``/tone.wav``, ``/big.wav`` (over the limit, no length
    given), ``/slow.wav`` (never finishes), ``/missing.wav`` (404), ``/moved`` (a redirect
    to tone.wav); counts GETs."""

    def __init__(self, tone: bytes):
        self.tone = tone
        self.gets: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.gets[name] = self.gets.get(name, 0) + 1
        if name == "tone.wav":
            return web.Response(body=self.tone, content_type="audio/wav")
        if name == "moved":
            raise web.HTTPFound("/tone.wav")
        if name in ("big.wav", "slow.wav"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(self.tone[:44])
            for _ in range(200):
                if name == "slow.wav":
                    await asyncio.sleep(0.1)
                await resp.write(b"\0" * 4096)
            await resp.write_eof()
            return resp
        raise web.HTTPNotFound()


@pytest.fixture
async def file_server(monkeypatch):
    monkeypatch.setattr(settings, "ALLOW_LOOPBACK_HTTP", True)
    server = FileServer(tone_wav(660, 0.5, 16000))
    runner, port = await serve_on_loopback(server.app())
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


async def test_a_url_is_fetched_once_and_plays_on_every_call(tmp_path, file_server):
    gw = await gateway_with_prompts(tmp_path, max_download_bytes=64 * 1024)
    try:
        for carrier, media_format in (("twilio", "mulaw/8000"), ("vonage", "l16/16000")):
            async with make_call(carrier, gw.ws_url, route="ivr",
                                 media_format=media_format) as call:
                control = await open_control(gw, call.call_id)
                for url in (f"{file_server.url}/tone.wav", f"{file_server.url}/moved"):
                    started, done, heard = await play(gw, call, control, {"url": url})
                    assert started["source"] == "prompt" and "error" not in done, done
                    rate = call.result.sample_rate
                    assert abs(dominant_hz(heard, rate) - 660) < 14
                    assert abs(sounding_seconds(heard, rate) - 0.5) < 0.03
                await control.ws.close()
        assert file_server.gets["tone.wav"] == 2  # itself, and once through the redirect
    finally:
        await gw.session.close()
        await gw.runner.cleanup()


async def test_a_url_that_cannot_be_fetched_fails_with_its_reason_and_the_call_goes_on(
        tmp_path, file_server):
    gw = await gateway_with_prompts(tmp_path, max_download_bytes=64 * 1024,
                                    download_timeout_s=1.0)
    closed = await serve_on_loopback(web.Application())  # a port with nobody behind it
    await closed[0].cleanup()
    try:
        async with make_call("twilio", gw.ws_url, route="ivr") as call:
            control = await open_control(gw, call.call_id)
            for path, kind, says in [
                    ("/big.wav", "too_large", "is over 65536 bytes"),
                    ("/slow.wav", "timeout", "within 1 s"),
                    ("/missing.wav", "http_status", "answered HTTP 404"),
                    (f"http://127.0.0.1:{closed[1]}/x.wav", "unreachable", "cannot be reached")]:
                url = path if path.startswith("http") else file_server.url + path
                _, done, heard = await play(gw, call, control, {"url": url + "?sig=SECRET"})
                assert says in done["error"] and "SECRET" not in done["error"], done
                assert heard == b""
                metrics = await gw.metrics_text()
                assert metric_value(metrics, "tts_gateway_prompt_errors_total", kind=kind) == 1
            _, done, heard = await play(gw, call, control, {"url": f"{file_server.url}/tone.wav"})
            assert "error" not in done and heard
            await control.ws.close()
    finally:
        await gw.session.close()
        await gw.runner.cleanup()


async def test_the_bot_protocol_plays_a_prompt_and_a_caller_key_cuts_it(gateway):
    async with make_call("twilio", gateway.ws_url, route="ivr") as call:
        control = await open_control(gateway, call.call_id)
        await control.ws.send_json({"type": "barge_in", "mode": "dtmf"})
        await control.next_event("barge_in.accepted")
        await control.ws.send_json({"type": "play", "prompt": "nope"})
        error = await control.next_event("error")
        assert error["kind"] == "unknown_prompt"
        await control.ws.send_json({"type": "play", "prompt": "mp3"})
        accepted = await control.next_event("play.accepted")
        assert accepted["prompt"] == "mp3"
        await control.next_event("speech.started", speech_id=accepted["speech_id"])
        await call.wait_for_media(5)
        await call.send_dtmf("5")
        done = await control.next_event("speech.done", speech_id=accepted["speech_id"])
        assert done["interrupted"] is True and done["cause"] == "dtmf", done
        assert done["prompt"] == "mp3"
        await control.ws.close()


def test_messages_name_a_url_without_its_query():
    from gateway.prompts.recorded import shown_url

    assert shown_url("https://cdn.test/p/a.wav?X-Amz-Signature=abc#f") == "https://cdn.test/p/a.wav"
    assert json.dumps(shown_url("https://h/" + "a" * 500)).count("a") < 110
