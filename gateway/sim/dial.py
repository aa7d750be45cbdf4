"""``tts-gateway dial``: place one simulated carrier call and report what the caller heard."""

from __future__ import annotations

import asyncio

import aiohttp
from telcodecs import ulaw_decode, write_wav

from gateway.sim.twilio import CallClosedError, TwilioCallSim


def _http_url(base_url: str) -> str:
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


async def dial_and_report(*, base_url: str, carrier: str = "twilio", route: str | None = None,
                          route_in_path: bool = False, texts: list[str] = (),
                          token: str | None = None, out: str | None = None,
                          quiet_seconds: float = 1.5, max_seconds: float = 60.0) -> dict:
    if carrier != "twilio":
        raise ValueError(f"carrier {carrier!r} is not simulated yet")
    url = f"{base_url.rstrip('/')}/v1/media/{carrier}"
    params = {}
    if route and route_in_path:
        url += f"/{route}"
    elif route:
        params["route"] = route
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sim = TwilioCallSim(url, custom_parameters=params)
    speech_ids: list[str] = []
    async with aiohttp.ClientSession() as http, sim:
        try:
            if texts:
                speech_ids = await _speak_when_up(http, _http_url(base_url.rstrip("/")),
                                                  sim.call_sid, list(texts), headers)
            await sim.wait_for_media(frames=1, timeout=min(max_seconds, 15.0))
            await sim.wait_idle(quiet=quiet_seconds, timeout=max_seconds)
        except (CallClosedError, TimeoutError, asyncio.TimeoutError):
            pass  # the report says what was heard until then
        await sim.hangup()
    result = sim.result
    if out:
        write_wav(out, ulaw_decode(result.heard_with_silence()), 8000)
    timing = result.frame_timing()
    latency = result.first_audio_latency
    return {
        "call_sid": result.call_sid,
        "first_audio_latency_ms": round(latency * 1000, 1) if latency is not None else None,
        "frames_received": len(result.frames),
        "heard_seconds": round(result.heard_seconds, 2),
        "frame_lateness_p50_ms": round(timing.p50 * 1000, 2) if timing else None,
        "frame_lateness_p99_ms": round(timing.p99 * 1000, 2) if timing else None,
        "frame_lateness_max_ms": round(timing.max * 1000, 2) if timing else None,
        "carrier_underruns": result.underruns,
        "marks_echoed": len(result.marks_sent_back),
        "speech_ids": speech_ids,
        "violations": [f"{code}: {detail}" for code, detail in result.violations],
        "closed_by_gateway": result.closed_by_gateway,
        "wav": out,
    }
