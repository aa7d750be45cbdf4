"""Call from this browser: headless chromium dials the real gateway as Twilio (μ-law 8 kHz)
or Vonage (L16 16 kHz), plays the greeting through its AudioWorklet, echoes the marks,
sends the fake microphone as the caller, presses keys and hangs up.

What the page played is captured inside the page (window.ttsConsole.captured()) and
judged here: speech, not silence or noise, as long as what the gateway sent. Figures are
printed (pytest -s), not asserted tightly.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.sim.carriers import caller_speech as cs
from tests.conftest import base_config, running_gateway
from tests.console.conftest import chromium
from tests.console.helpers import screenshot
from tests.e2e.test_twilio_call import LONG_TEXT, open_control

FORMATS = {"twilio": "μ-law 8 kHz", "vonage": "L16 16 kHz"}


async def place_call(page, gw, carrier: str, route: str, *, microphone: bool) -> str:
    """Open the console, dial ``route`` in ``carrier``'s format; the gateway's call id."""
    await page.goto(gw.http_url + "/")
    await page.fill("#call-route", route)
    await page.select_option("#call-format", carrier)
    await page.set_checked("#call-mic", microphone)
    await page.click("#call-start")
    call = await wait_for_state(page, "in call")
    return call["callId"]


async def wait_for_state(page, state: str, timeout: float = 10) -> dict:
    """Polled from here: the page's CSP forbids the eval wait_for_function's polling uses."""
    async with asyncio.timeout(timeout):
        while (call := await page.evaluate("window.ttsConsole.call()"))["state"] != state:
            await asyncio.sleep(0.05)
    return call


async def captured(page) -> tuple[np.ndarray, dict]:
    capture = await page.evaluate("window.ttsConsole.captured()")
    samples = np.frombuffer(base64.b64decode(capture.pop("pcm")), dtype="<i2")
    return samples.astype(np.float64) / 32768, capture


def speech_figures(samples: np.ndarray, rate: int) -> dict:
    """20 ms windows: how many carry sound (above -50 dBFS), how often sound stops and
    starts again (words and sentences), and the share of the energy in 100-4000 Hz."""
    window = rate // 50
    frames = samples[: len(samples) // window * window].reshape(-1, window)
    level = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-9)
    active = level > -50
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = spectrum[(freqs >= 100) & (freqs <= 4000)].sum() / spectrum.sum()
    return {"seconds": len(samples) / rate, "active": float(active.mean()),
            "onsets": int((np.diff(active.astype(int)) == 1).sum()),
            "peak_dbfs": float(level.max()), "band_share": float(band)}


async def call_summary(gw, call_id: str) -> dict:
    status, body = await gw.get_json(f"/v1/calls/{call_id}")
    assert status == 200, body
    return body


async def wait_until_gone(gw, call_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            status, body = await gw.get_json("/v1/calls")
            assert status == 200, body
            if call_id not in [call["id"] for call in body["calls"]]:
                return
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("carrier", list(FORMATS))
async def test_a_browser_call_plays_the_greeting_echoes_marks_sends_a_key_and_hangs_up(
        carrier, console_errors):
    async with running_gateway(base_config()) as gw, chromium() as browser:
        page = console_errors.watch(await browser.new_page())
        call_id = await place_call(page, gw, carrier, "demo", microphone=False)
        control = await open_control(gw, call_id)
        # speech.done (not interrupted) fires when the mark after the greeting comes back:
        # the page echoed it once that audio had played
        done = await control.next_event("speech.done", timeout=60)
        assert done["interrupted"] is False
        summary = await call_summary(gw, call_id)
        assert summary["carrier"] == carrier
        await page.click('#keypad button[data-digit="5"]')
        assert (await control.next_event("dtmf"))["digit"] == "5"

        samples, player = await captured(page)
        figures = speech_figures(samples, player["rate"])
        sent_s = summary["frames_sent"] * 0.02
        stats = await page.evaluate("window.ttsConsole.call()")
        print(f"\n{carrier}: gateway sent {sent_s:.2f} s, page played {figures['seconds']:.2f} s "
              f"at {player['rate']} Hz, {figures['active']:.0%} of 20 ms windows active, "
              f"{figures['onsets']} onsets, peak {figures['peak_dbfs']:.1f} dBFS, "
              f"{figures['band_share']:.1%} of energy in 100-4000 Hz, "
              f"underruns {player['underruns']}, marks echoed {stats['marksEchoed']}, "
              f"frames received {stats['framesReceived']}")
        assert abs(figures["seconds"] - sent_s) < max(0.5, 0.05 * sent_s)
        assert sent_s > 5
        assert 0.4 < figures["active"] < 0.98 and figures["onsets"] >= 5
        assert figures["peak_dbfs"] > -20
        assert figures["band_share"] > 0.8
        assert stats["marksEchoed"] >= 1 and stats["invalidMessages"] == 0

        await page.click("#call-hangup")
        await wait_until_gone(gw, call_id)
        assert "you hung up" in await page.inner_text("#call-status")
        assert console_errors == []


def write_wav(path: Path, pcm: bytes, rate: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


@pytest.fixture(scope="module")
def caller_wav(tmp_path_factory) -> Path:
    """Two Piper phrases after 2 s of silence (the greeting starts first), at -20 dBFS."""
    rate = 16000
    phrases = [cs.trimmed(p, rate) for p in cs.piper_phrases(cs.PHRASES[:2], rate)]
    speech = cs.at_level(b"".join(phrases), rate, -20.0)
    pcm = cs.silence(2.0, rate) + speech + cs.silence(1.0, rate)
    return write_wav(tmp_path_factory.mktemp("mic") / "caller.wav", pcm, rate)


@pytest.mark.parametrize("carrier", list(FORMATS))
async def test_the_microphone_barges_in_as_the_caller_and_the_gateway_hangs_up(
        carrier, caller_wav, console_errors):
    data = base_config()
    data["routes"]["barge"] = {"provider": "local", "greeting": LONG_TEXT,
                               "barge_in": {"mode": "speech"}}
    async with running_gateway(data) as gw, chromium(fake_mic=caller_wav) as browser:
        page = console_errors.watch(await browser.new_page())
        call_id = await place_call(page, gw, carrier, "barge", microphone=True)
        control = await open_control(gw, call_id)
        await control.next_event("caller.speech_started", timeout=30)
        done = await control.next_event("speech.done", timeout=30)
        assert done["interrupted"] is True and done["cause"] == "speech"
        summary = await call_summary(gw, call_id)
        stats = await page.evaluate("window.ttsConsole.call()")
        print(f"\n{carrier} mic: gateway got {summary['inbound_frames']} caller frames, page sent "
              f"{stats['micFramesSent']}, dropped {stats['micFramesDropped']}, "
              f"clears {stats['clears']}; the greeting was cut after {done['played_ms']} ms")
        assert summary["inbound_frames"] >= 100 and stats["micFramesDropped"] == 0
        assert stats["clears"] >= 1 and stats["micProblem"] is None
        # the gateway hangs up: the page ends the call and says so
        status, body = await gw.post_json(f"/v1/calls/{call_id}/hangup")
        assert status < 300, body
        assert (await wait_for_state(page, "ended"))["ending"].startswith("ended by the gateway")
        assert "ended by the gateway" in await page.inner_text("#call-status")
        assert await page.is_enabled("#call-start")
        await wait_until_gone(gw, call_id)
        assert console_errors == []


async def test_the_pages_mu_law_agrees_with_audioop(browser):
    async with running_gateway(base_config()) as gw:
        page = await browser.new_page()
        await page.goto(gw.http_url + "/")
        encoded, decoded = await page.evaluate("""async () => {
            const { ulawEncode, ulawDecode } = await import("/console/g711.js");
            const all = new Int16Array(65536).map((_, i) => i - 32768);
            const codes = new Uint8Array(256).map((_, i) => i);
            return [Array.from(ulawEncode(all)), Array.from(ulawDecode(codes))];
        }""")
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert bytes(encoded) == audioop.lin2ulaw(every_sample, 2)
    assert np.array(decoded, dtype="<i2").tobytes() == audioop.ulaw2lin(bytes(range(256)), 2)


async def test_the_resampler_keeps_speech_and_rejects_what_would_alias(browser):
    """The worklets' FIR, run in the page: a tone in the band passes at full level and with
    little distortion (up to the sound card and down to the call), a tone above the call's
    Nyquist frequency is filtered out instead of folding into the band."""
    async with running_gateway(base_config()) as gw:
        page = await browser.new_page()
        await page.goto(gw.http_url + "/")
        results = await page.evaluate("""async () => {
            const { Resampler } = await import("/console/resampler.js");
            const cases = [[8000, 48000, 1000], [8000, 44100, 3000], [16000, 48000, 6000],
                           [48000, 8000, 1000], [48000, 8000, 5000], [44100, 16000, 9000]];
            return cases.map(([from, to, hz]) => {
                const r = new Resampler(from, to), input = new Float32Array(from);
                input.forEach((_, i) => {
                    input[i] = 0.5 * Math.sin(2 * Math.PI * hz * i / from);
                });
                const parts = [];
                const step = from / 50;
                for (let i = 0; i < from; i += step) {
                    parts.push(...r.process(input.subarray(i, i + step)));
                }
                return { from, to, hz, output: parts };
            });
        }""")
    for case in results:
        y = np.array(case["output"])[500:-500]
        t = np.arange(500, 500 + len(y)) / case["to"]
        phase = 2 * np.pi * case["hz"] * t
        basis = np.stack([np.sin(phase), np.cos(phase)], 1)
        fit, *_ = np.linalg.lstsq(basis, y, rcond=None)
        rms = np.sqrt((y ** 2).mean())
        snr = 10 * np.log10((y ** 2).sum() / max(((y - basis @ fit) ** 2).sum(), 1e-30))
        print(f"{case['from']} -> {case['to']} Hz, {case['hz']} Hz tone: rms {rms:.4f}, "
              f"SNR {snr:.1f} dB")
        if case["hz"] < 0.45 * min(case["from"], case["to"]):
            assert abs(rms - 0.5 / np.sqrt(2)) < 0.01 and snr > 50
        else:
            assert rms < 0.5 / np.sqrt(2) * 10 ** (-60 / 20)  # at least 60 dB down


async def test_the_picker_offers_the_routes_and_a_routes_media_token_is_asked_for(
        console_errors):
    """The route list comes from GET /v1/routes; a route with a media token shows the token
    field, and the call reaches the gateway only with the right token."""
    config = base_config()
    config["routes"]["private"] = {"provider": "local", "greeting": "Only with the token.",
                                   "token_env": "PRIVATE_ROUTE_TOKEN"}
    async with running_gateway(config, {"PRIVATE_ROUTE_TOKEN": "path-secret-42"}) as gw, \
            chromium() as browser:
        page = console_errors.watch(await browser.new_page())
        await page.goto(gw.http_url + "/")
        async with asyncio.timeout(10):
            while len(options := await page.eval_on_selector_all(
                    "#call-routes option", "nodes => nodes.map(n => n.value)")) < 3:
                await asyncio.sleep(0.05)
        assert set(options) == set(config["routes"])
        token_field = page.locator("#call-route-token")
        assert not await token_field.is_visible()
        await page.fill("#call-route", "private")
        assert await token_field.is_visible()
        await page.set_checked("#call-mic", False)

        await token_field.fill("wrong")
        await page.click("#call-start")
        await wait_for_state(page, "ended")
        assert "could not connect" in await page.inner_text("#call-status")
        status, body = await gw.get_json("/v1/calls")
        assert status == 200 and body["calls"] == []

        await token_field.fill("path-secret-42")
        await page.click("#call-start")
        call = await wait_for_state(page, "in call")
        summary = await call_summary(gw, call["callId"])
        assert summary["route"] == "private"
        await page.click("#call-hangup")
        await wait_until_gone(gw, call["callId"])
        # the refused upgrade is the browser's own network error line, nothing else
        assert all("WebSocket connection" in line for line in console_errors), console_errors


async def test_speech_asked_for_in_the_console_is_heard_in_the_browser_call(console_errors):
    """The whole console at once: the browser's own call shows in the calls table, and text
    spoken into it from the call's controls is played by the page."""
    config = base_config()
    config["routes"]["quiet"] = {"provider": "local"}  # no greeting: all sound is the speak
    async with running_gateway(config) as gw, chromium() as browser:
        page = console_errors.watch(await browser.new_page(
            viewport={"width": 1280, "height": 800}))
        call_id = await place_call(page, gw, "twilio", "quiet", microphone=False)
        row = page.locator(f'#calls-table tbody tr[data-call-id="{call_id}"]')
        await row.click()
        control = await open_control(gw, call_id)
        await page.fill("#speak-text", "Hello from the console, this is heard in the browser.")
        await page.click("#speak-button")
        started = await control.next_event("speech.started", timeout=30)
        done = await control.next_event("speech.done", timeout=60)
        assert done["speech_id"] == started["speech_id"] and done["interrupted"] is False
        await page.locator('#timeline li[data-type="speech.done"]').wait_for(timeout=10_000)
        await screenshot(page, "console.png")
        samples, player = await captured(page)
        figures = speech_figures(samples, player["rate"])
        sent_s = (await call_summary(gw, call_id))["frames_sent"] * 0.02
        print(f"\nconsole speak: sent {sent_s:.2f} s, played {figures['seconds']:.2f} s, "
              f"{figures['active']:.0%} active, {figures['onsets']} onsets")
        assert sent_s > 1.5 and abs(figures["seconds"] - sent_s) < max(0.5, 0.05 * sent_s)
        assert figures["onsets"] >= 2 and figures["peak_dbfs"] > -20
        assert figures["band_share"] > 0.8
        await page.click("#call-hangup")
        await wait_until_gone(gw, call_id)
        assert console_errors == []
