"""``tts-gateway dial``: place one simulated carrier call and report what the caller heard."""

from __future__ import annotations

import asyncio
import os
import wave
from collections.abc import Sequence
from typing import Any

import aiohttp
from telcodecs import read_wav, write_wav

from gateway.carriers.registry import CARRIERS, DEFAULT_CARRIER
from gateway.sim.carriers import CallClosedError, make_call

#: the longest caller audio ``--caller-audio`` takes (bytes of WAV file)
MAX_CALLER_AUDIO_BYTES = 64 * 1024 * 1024


def read_caller_audio(path: str) -> tuple[bytes, int]:
    """A mono 16-bit WAV file as ``(pcm16, rate)``; ValueError says what is wrong with it."""
    size = os.path.getsize(path)
    if size > MAX_CALLER_AUDIO_BYTES:
        raise ValueError(f"{path}: {size} bytes; the caller's audio may be at most "
                         f"{MAX_CALLER_AUDIO_BYTES} bytes")
    try:
        pcm, rate = read_wav(path)
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a WAV file the simulator can read ({exc})") from None
    if not pcm:
        raise ValueError(f"{path}: no audio in it")
    return pcm, rate


#: the most key presses ``--digits`` takes
MAX_DIGIT_PRESSES = 100


def parse_digits(spec: str, max_seconds: float) -> list[tuple[float, str]]:
    """``"2@3.5,1@8"`` -> ``[(3.5, "2"), (8.0, "1")]``: keys and the second of the call
    they are pressed at, in time order; ValueError says what is wrong."""
    presses = []
    for part in spec.split(","):
        keys, at, seconds = part.strip().partition("@")
        try:
            when = float(seconds)
        except ValueError:
            when = -1.0
        if not at or not keys or not 0 <= when <= max_seconds:
            raise ValueError(f"--digits: {part.strip()!r} is not KEYS@SECONDS with SECONDS "
                             f"within the call (0 to {max_seconds}), e.g. 2@3.5")
        presses.append((when, keys))
    if len(presses) > MAX_DIGIT_PRESSES:
        raise ValueError(f"--digits: {len(presses)} presses, at most {MAX_DIGIT_PRESSES}")
    return sorted(presses)


async def _press(call, presses: list[tuple[float, str]]) -> None:
    """Send each press at its time, counted from now (the call's start)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for when, keys in presses:
        await asyncio.sleep(max(0.0, start + when - loop.time()))
        await call.send_dtmf(keys)


def _http_url(base_url: str) -> str:
    """The control API's base URL from the media URL (AudioSocket's TCP port is not HTTP:
    assume the gateway's default HTTP port on the same host)."""
    if base_url.startswith("tcp://"):
        host = base_url[len("tcp://"):].rsplit(":", 1)[0]
        return f"http://{host}:8080"
    return "http" + base_url[2:] if base_url.startswith("ws") else base_url


async def _speak_when_up(http: aiohttp.ClientSession, base: str, call_sid: str, texts: list[str],
                         headers: dict, timeout: float = 10.0) -> list[str]:
    """Post each text once the gateway knows the call; returns the speech ids."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with http.get(f"{base}/v1/calls/{call_sid}", headers=headers) as resp:
            if resp.status == 200:
                break
            if resp.status == 401:
                raise PermissionError("the control API wants a bearer token: pass --token")
        if loop.time() > deadline:
            raise TimeoutError(f"the gateway never registered call {call_sid}")
        await asyncio.sleep(0.05)
    ids = []
    for text in texts:
        async with http.post(f"{base}/v1/calls/{call_sid}/speak", json={"text": text},
                             headers=headers) as resp:
            body = await resp.json()
            if resp.status != 202:
                raise RuntimeError(f"speak was refused: {resp.status} {body}")
            ids.append(body["speech_id"])
    return ids


async def dial_and_report(*, base_url: str, carrier: str = DEFAULT_CARRIER,
                          route: str | None = None,
                          route_in_path: bool = False, texts: Sequence[str] = (),
                          token: str | None = None, out: str | None = None,
                          quiet_seconds: float = 1.5, max_seconds: float = 60.0,
                          media_format: str | None = None, api_url: str | None = None,
                          caller_audio: str | None = None,
                          caller_audio_at: float = 0.0, digits: str | None = None) -> dict:
    """Call the gateway at ``base_url`` as ``carrier``, say ``texts`` through the control API
    (at ``api_url``, by default derived from ``base_url``), hang up after ``quiet_seconds``
    of silence, and report. The control API's call id is the carrier's call id.
    ``caller_audio`` (a WAV file) is what the caller says, ``caller_audio_at`` seconds after
    the call starts (silence before and after). ``digits`` (``"2@3.5,1@8"``) are keys the
    caller presses at those seconds; the call is not hung up for silence before the last."""
    if carrier not in CARRIERS:
        raise ValueError(f"unknown carrier {carrier!r}; choose one of {', '.join(CARRIERS)}")
    options: dict[str, Any] = {}
    if route and not route_in_path and CARRIERS[carrier].route_as_parameter:
        options["custom_parameters"] = {"route": route}
        route = None
    if not 0 <= caller_audio_at <= max_seconds:
        raise ValueError(f"caller_audio_at: {caller_audio_at} s is not within the call "
                         f"(0 to {max_seconds} s)")
    if caller_audio is not None:
        options["caller_audio"] = read_caller_audio(caller_audio)
        options["caller_audio_at"] = caller_audio_at
    presses = parse_digits(digits, max_seconds) if digits else []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    call = make_call(carrier, base_url, route=route, media_format=media_format, **options)
    for _, keys in presses:
        if set(keys) - set(call.dtmf_digits):
            raise ValueError(f"--digits: {carrier} sends the keys {call.dtmf_digits} only, "
                             f"not {keys!r}")
    speech_ids: list[str] = []
    async with aiohttp.ClientSession() as http, call:
        try:
            if texts:
                api = (api_url or _http_url(base_url)).rstrip("/")
                speech_ids = await _speak_when_up(http, api, call.call_id, list(texts), headers)
            pressing = asyncio.ensure_future(_press(call, presses))
            pressing.add_done_callback(lambda t: t.cancelled() or t.exception())
            try:
                await call.wait_for_media(frames=1, timeout=min(max_seconds, 15.0))
                await asyncio.wait_for(asyncio.shield(pressing), max_seconds)
                await call.wait_idle(quiet=quiet_seconds, timeout=max_seconds)
            finally:
                pressing.cancel()
        except (CallClosedError, TimeoutError):
            pass  # the report says what was heard until then
        await call.hangup()
    result = call.result
    if out:
        write_wav(out, result.heard_pcm16(with_silence=True), result.sample_rate)
    timing = result.frame_timing()
    latency = result.first_audio_latency
    return {
        "carrier": carrier,
        "media_format": result.format.name,
        "call_id": result.call_id,
        "call_sid": result.call_id,  # the name before other carriers existed
        "first_audio_latency_ms": round(latency * 1000, 1) if latency is not None else None,
        "frames_received": len(result.frames),
        "heard_seconds": round(result.heard_seconds, 2),
        "frame_lateness_p50_ms": round(timing.p50 * 1000, 2) if timing else None,
        "frame_lateness_p99_ms": round(timing.p99 * 1000, 2) if timing else None,
        "frame_lateness_max_ms": round(timing.max * 1000, 2) if timing else None,
        "carrier_underruns": result.underruns,
        "carrier_bursts": len(result.bursts),
        "marks_echoed": len(result.marks_sent_back),
        "speech_ids": speech_ids,
        "digits_sent": [f"{keys}@{when:g}" for when, keys in presses],
        "violations": [f"{code}: {detail}" for code, detail in result.violations],
        "closed_by_gateway": result.closed_by_gateway,
        "carrier_hangup": result.carrier_hangup,
        "wav": out,
    }
