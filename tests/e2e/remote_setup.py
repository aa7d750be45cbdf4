"""One setup for the end-to-end tests of the remote providers: a real gateway, a provider's
faithful fake over loopback, the Twilio simulator as the carrier, and the control socket.

``PROVIDERS`` is the table of all eight providers: each row names the fake, the gateway's
config for it, and the quirks that change what a common test expects of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

import pytest
from aiohttp import web

from gateway.http.keys import CALLS
from gateway.http.loopback import serve_on_loopback
from gateway.tts.providers.cartesia import fake as cartesia
from gateway.tts.providers.deepgram import fake as deepgram
from gateway.tts.providers.elevenlabs import fake as elevenlabs
from gateway.tts.providers.inworld import fake as inworld
from gateway.tts.providers.smallest import fake as smallest
from gateway.tts.providers.telnyx import fake as telnyx
from gateway.tts.providers.together import fake as together
from gateway.tts.providers.uplift import fake as uplift
from tests.conftest import RunningGateway, base_config, start_gateway

KEY_ENV = {"FAKE_TTS_KEY": "test-key"}
ULAW_SILENCE = 0xFF

Check = Callable[["Setup"], None]


# ---- how each fake logs what it synthesized ------------------------------------------------------


def _inworld_seconds(e: dict) -> float:
    return e["bytes"] / (8000 if e["encoding"] in ("MULAW", "ALAW") else 16000)


def _smallest_seconds(e: dict) -> float:
    return e["bytes"] / (1 if e["format"] in ("ulaw", "alaw") else 2) / e["sample_rate"]


def _pcm16_seconds(e: dict) -> float:
    return e["bytes"] / 2 / e["sample_rate"]


def _ecd_seconds(e: dict) -> float:  # ElevenLabs, Cartesia, Deepgram
    fmt = e.get("output_format") or e.get("encoding")
    width = 1 if fmt in ("ulaw_8000", "alaw_8000", "pcm_mulaw", "pcm_alaw", "mulaw", "alaw") else 2
    return e["bytes"] / width / (e.get("sample_rate") or 8000)


def _uplift_telnyx_seconds(e: dict) -> float:
    if e["format"] in ("ULAW_8000_8", "mulaw", "alaw"):
        return e["bytes"] / 8000
    return e["bytes"] / 2 / e["sample_rate"]


# ---- what each provider was asked for on a μ-law 8 kHz carrier -----------------------------------


def _elevenlabs_format(setup: Setup) -> None:
    assert all(c["output_format"] == "ulaw_8000" for c in setup.fake["connects"])


def _cartesia_format(setup: Setup) -> None:
    assert all(m["output_format"] == {"container": "raw", "encoding": "pcm_mulaw",
                                      "sample_rate": 8000}
               for m in setup.fake["received"] if "transcript" in m)


def _deepgram_format(setup: Setup) -> None:
    assert all((c["encoding"], c["sample_rate"]) == ("mulaw", 8000)
               for c in setup.fake["connects"])


def _uplift_format(setup: Setup) -> None:
    assert [e["format"] for e in setup.fake["log"]] == ["ULAW_8000_8"]


def _telnyx_format(setup: Setup) -> None:  # raw PCM at 8 kHz, never MP3
    # (a synthesis per sentence: a whole text goes sentence by sentence, a flush each)
    assert {(e["format"], e["sample_rate"]) for e in setup.fake["log"]} == {("linear16", 8000)}


# ---- how each provider stops a cut turn upstream, with its own verb ------------------------------


def _elevenlabs_stops(setup: Setup) -> list:
    # close_context; for a whole text it already went out after the text, at the end of
    # input (what was flushed goes on being generated, asyncapi [C]) and is dropped
    return [m["context_id"] for m in setup.fake["received"] if m.get("close_context") is True]


def _deepgram_stops(setup: Setup) -> list:
    return [m for m in setup.fake["received"] if m.get("type") == "Clear"]


# ---- how each provider carried a streamed utterance of two sentences -----------------------------


def _one_turn(key: str) -> Check:
    def check(setup: Setup) -> None:  # one context for the utterance
        log = setup.fake["log"]
        assert log[0][key] == log[1][key]
    return check


def _smallest_streamed(setup: Setup) -> None:  # one request at a time: a request per sentence
    log = setup.fake["log"]
    assert log[0]["request_id"] != log[1]["request_id"]


def _cartesia_streamed(setup: Setup) -> None:
    # the first context expired during the pause (1 s after its last audio, [C]); the
    # second sentence went to a fresh context of the same turn instead of being lost
    log = setup.fake["log"]
    first_ctx, second_ctx = log[0]["context_id"], log[1]["context_id"]
    assert second_ctx == first_ctx + "~1"
    assert setup.fake["expired"] == [first_ctx]


def _deepgram_streamed(setup: Setup) -> None:  # one Speak and one Flush per sentence
    assert [m["type"] for m in setup.fake["received"]] == ["Speak", "Flush", "Speak", "Flush"]


# ---- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    kind: str
    make_app: Callable[..., web.Application]
    path: str
    voice: str
    seconds: Callable[[dict], float]  # seconds of audio in one entry of the fake's log
    fake_profile: dict = field(default_factory=dict)  # the fake's defaults for every test
    options: dict = field(default_factory=dict)  # the provider's default options
    pool_max: int = 4
    #: on a μ-law carrier the caller hears the provider's own bytes, untranscoded
    ulaw_passthrough: bool = False
    #: checks the audio format the provider was asked for on a μ-law 8 kHz carrier
    asked_format: Check | None = None
    #: connections a call used after an interrupt and one more utterance: 2 where the cut
    #: socket cannot be reused (Smallest has no cancel, a Telnyx socket serves one utterance)
    connections_after_interrupt: int = 1
    #: the fake profile of the interrupt test (late audio after the cut)
    interrupt_profile: dict = field(default_factory=dict)
    #: what went upstream to stop a cut turn, and what it must be (None: only how many)
    stops: Callable[[Setup], list] | None = None
    cut_turn: Callable[[Setup], object] | None = None
    #: when ``stops`` is checked: "at_cut" (ElevenLabs' close_context also ends every whole
    #: text, so the next utterance adds one) or "after_call" (nothing else stops a turn)
    stops_checked: str = "at_cut"
    #: the cut turn's audio arriving after the cut is dropped (and counted) at the socket
    counts_late_chunks: bool = False
    #: the text of the next utterance is logged by the fake exactly as sent
    logs_exact_text: bool = False
    error_text: str = "synthesis failed"
    #: the failed text is not in the fake's log (not replayed)
    checks_no_replay: bool = False
    #: (fake profile, pool settings, options) for a 1 s idle limit; None: no idle test here
    idle: tuple[dict, dict, dict] | None = None
    #: the fake records its server-initiated closes in ``fake["closed"]``
    records_closes: bool = False
    #: every utterance of a call goes over one connection (not Telnyx: one per utterance)
    one_connection_per_call: bool = True
    #: requests multiplexed on one connection; the fake logs the socket of each
    multiplexed: bool = False
    #: the check of a streamed two-sentence utterance; None: the provider's own test
    streamed: Check | None = None
    streamed_profile: dict = field(default_factory=dict)
    keepalive_s: float | None = None


_IDLE_1S = ({"idle_timeout_s": 1.0}, {"idle_timeout_s": 1.0}, {})

PROVIDERS: dict[str, Provider] = {p.kind: p for p in [
    Provider("inworld", inworld.make_app, inworld.PATH, "Ashley", _inworld_seconds,
             idle=_IDLE_1S, streamed=_one_turn("contextId"),
             # a slow bot: contexts expire after 0.6 s without text; the keepalive holds it
             streamed_profile={"context_idle_s": 0.6}, keepalive_s=0.2),
    Provider("smallest", smallest.make_app, smallest.PATH, "meher", _smallest_seconds,
             options={"complete_backoff_ms": 50}, connections_after_interrupt=2,
             idle=({}, {}, {"timeout_s": 1}), streamed=_smallest_streamed),
    Provider("together", together.make_app, together.PATH, "af_alloy", _pcm16_seconds,
             idle=_IDLE_1S, streamed=_one_turn("context_id")),
    Provider("elevenlabs", elevenlabs.make_app, elevenlabs.PATH, "21m00Tcm4TlvDq8ikWAM",
             _ecd_seconds, ulaw_passthrough=True, asked_format=_elevenlabs_format,
             stops=_elevenlabs_stops, cut_turn=lambda s: s.fake["log"][0]["context_id"],
             counts_late_chunks=True, logs_exact_text=True,
             idle=({}, {}, {"inactivity_timeout": 1}), records_closes=True,
             streamed=_one_turn("context_id")),
    Provider("cartesia", cartesia.make_app, cartesia.PATH,
             "a0e99841-438c-4a64-b679-ae501e7d6091", _ecd_seconds, ulaw_passthrough=True,
             asked_format=_cartesia_format, stops=lambda s: list(s.fake["cancels"]),
             cut_turn=lambda s: s.fake["log"][0]["context_id"],
             counts_late_chunks=True, logs_exact_text=True, idle=_IDLE_1S,
             records_closes=True, streamed=_cartesia_streamed),
    Provider("deepgram", deepgram.make_app, deepgram.PATH, "aura-2-thalia-en", _ecd_seconds,
             ulaw_passthrough=True, asked_format=_deepgram_format, stops=_deepgram_stops,
             counts_late_chunks=True, logs_exact_text=True,
             idle=_IDLE_1S, records_closes=True, streamed=_deepgram_streamed),
    Provider("uplift", uplift.make_app, uplift.PATH, "v_meklc281", _uplift_telnyx_seconds,
             pool_max=6, ulaw_passthrough=True, asked_format=_uplift_format,
             interrupt_profile={"late_chunks": 3}, stops=lambda s: s.fake["cancels"],
             cut_turn=lambda s: s.fake["log"][0]["request_id"], stops_checked="after_call",
             checks_no_replay=True, multiplexed=True),
    Provider("telnyx", telnyx.make_app, telnyx.PATH, "Telnyx.NaturalHD.astra",
             _uplift_telnyx_seconds, fake_profile={"burst_factor": 8.0}, pool_max=6,
             asked_format=_telnyx_format, connections_after_interrupt=2,
             interrupt_profile={"late_chunks": 3}, stops=lambda s: s.fake["forces"],
             cut_turn=lambda s: s.fake["log"][0]["socket"], stops_checked="after_call",
             error_text="Error in audio response", checks_no_replay=True,
             one_connection_per_call=False),
]}


def providers(*, where: Callable[[Provider], object] = lambda p: True):
    """The table's rows as pytest parameters, for ``@pytest.mark.parametrize("p", ...)``."""
    return [pytest.param(p, id=p.kind) for p in PROVIDERS.values() if where(p)]


# ---- the setup -----------------------------------------------------------------------------------


@dataclass
class Setup:
    kind: str
    fake: web.Application
    gw: RunningGateway

    @property
    def provider(self) -> Provider:
        return PROVIDERS[self.kind]

    @property
    def connections(self) -> int:
        return self.fake["stats"].connections

    def produced_seconds(self) -> float:
        """Seconds of audio the fake synthesized, from its own log."""
        return sum(self.provider.seconds(entry) for entry in self.fake["log"])

    def texts(self) -> list[str]:
        return [e["text"].strip() for e in self.fake["log"]]

    def session_of(self, call_sid: str):
        call = self.gw.app[CALLS][call_sid]
        return call._sessions[self.kind].result()

    async def speak(self, call_sid: str, text: str) -> str:
        status, body = await self.gw.post_json(f"/v1/calls/{call_sid}/speak", {"text": text})
        assert status == 202, body
        return body["speech_id"]


def fake_provider_config(kind: str, port: int, *, options: dict | None = None,
                         pool: dict | None = None) -> dict:
    """The gateway's config for provider ``kind`` speaking to its fake on ``port``."""
    p = PROVIDERS[kind]
    return {"type": kind, "api_key_env": "FAKE_TTS_KEY", "voice": p.voice,
            "endpoint": f"ws://127.0.0.1:{port}{p.path}",
            "options": {**p.options, **(options or {})},
            "pool": {"min_idle": 1, "max": p.pool_max, **(pool or {})}}


@pytest.fixture
async def remote():
    """``await remote(kind, fake_profile={}, pool={}, options={}, limits={})`` -> Setup."""
    cleanups = []

    async def start(kind: str, *, fake_profile: dict | None = None, pool: dict | None = None,
                    options: dict | None = None, limits: dict | None = None) -> Setup:
        p = PROVIDERS[kind]
        fake = p.make_app(**{**p.fake_profile, **(fake_profile or {})})
        runner, port = await serve_on_loopback(fake)
        cleanups.append(runner.cleanup)
        data = base_config()
        data["providers"] = {kind: fake_provider_config(kind, port, options=options, pool=pool)}
        data["routes"] = {"bot": {"provider": kind}}
        data["default_route"] = "bot"
        if limits:
            data["limits"] = {**(data.get("limits") or {}), **limits}
        gw = await start_gateway(data, KEY_ENV)
        cleanups.append(gw.runner.cleanup)
        cleanups.append(gw.session.close)
        return Setup(kind, fake, gw)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def assert_exactly(heard: bytes, audio: bytes) -> None:
    """The caller heard ``audio`` byte for byte (μ-law passed through), then at most one
    frame's μ-law silence padding."""
    assert heard[:len(audio)] == audio
    assert len(heard) - len(audio) < 160 and set(heard[len(audio):]) <= {ULAW_SILENCE}
