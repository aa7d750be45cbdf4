"""Load and validate ``gateway.yaml``.

Validation collects every problem, each naming the key (``routes.demo.provider: ...``),
so ``tts-gateway check-config`` can print them all at once. Secrets are never literal in
the file: keys ending in ``_env`` name the environment variable that holds them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.carriers.registry import CARRIERS, DEFAULT_CARRIER

# Remote providers, each with the calls that may share one socket: Inworld holds 5
# contexts, Together 100; Smallest one request at a time (tts-providers.md §1.1, §3.5,
# §2.5). ElevenLabs 5 contexts (§6); Cartesia "dozens" of contexts (§7, 10 here [I]); a
# Deepgram socket is one stream (§8). Uplift AI (§4) speaks Socket.IO, 60 requests a
# minute per connection: a few calls share one at most [I]. Telnyx TTS (§5) serves one
# utterance per socket: never shared.
_SHARE_LIMITS = {"inworld": 4, "smallest": 1, "together": 50, "elevenlabs": 4,
                 "cartesia": 10, "deepgram": 1, "uplift": 4, "telnyx": 1}
PROVIDER_TYPES = ("piper", "fake", *_SHARE_LIMITS)
_POOL_KEYS = {"min_idle", "max", "calls_per_connection", "connect_timeout_s",
              "acquire_timeout_s", "idle_timeout_s", "max_session_s", "backoff_base_s",
              "backoff_max_s"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists each one, naming its key."""

    def __init__(self, problems: list[str], source: str = "gateway.yaml"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    # on SIGTERM: how long calls in progress may go on before they are hung up
    drain_timeout_s: float = 300.0


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    voice: str
    options: dict[str, Any] = field(default_factory=dict)
    # remote providers only
    api_key: str | None = field(default=None, repr=False)  # never printed or logged
    endpoint: str | None = None
    model: str | None = None
    pool: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CarrierConfig:
    """One enabled carrier. ``secrets`` maps e.g. ``auth_token`` to its value (read from
    the environment variable that ``auth_token_env`` names); never printed or logged."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    lead_ms: int | None = None  # overrides playout.lead_ms for this carrier


#: Without a setting, a route with fallbacks gives each provider this long to start its audio.
DEFAULT_FIRST_AUDIO_TIMEOUT_MS = 2000


#: The formats a bot may take the caller's audio in (``encoding/rate``).
BOT_AUDIO_FORMATS = ("l16/16000", "l16/8000", "mulaw/8000")
BARGE_IN_MODES = ("off", "dtmf", "speech", "any")
#: barge_in's timings and their bounds, in the config and when a bot changes them
BARGE_IN_BOUNDS = {"min_speech_ms": (20, 5000), "min_silence_ms": (20, 10000)}


@dataclass(frozen=True)
class BotConfig:
    """``routes.<name>.bot``: the gateway dials the bot's WebSocket when a call starts on
    the route and speaks the bot protocol over it (gateway/bot/)."""

    url: str
    audio: str = "l16/16000"  # the caller's audio to the bot, one of BOT_AUDIO_FORMATS
    audio_packet_ms: int = 20  # 20..200, in steps of 20
    secret: str | None = field(default=None, repr=False)  # signs the upgrade (HMAC-SHA256)
    connect_timeout_ms: int = 3000
    # the bot cannot be reached: say this, then hang up ("hangup") or go on ("continue",
    # the route's greeting and the control API only)
    failure_text: str | None = "Sorry, this line cannot take your call right now. Goodbye."
    on_failure: str = "hangup"
    reconnect_s: float = 10.0  # how long a dropped bot socket is redialed


@dataclass(frozen=True)
class BargeInConfig:
    """``routes.<name>.barge_in``: what from the caller interrupts the gateway's speech."""

    mode: str = "off"  # off, dtmf, speech, any
    min_speech_ms: int = 200  # caller speech this long before it counts as barge-in
    min_silence_ms: int = 500  # silence this long ends the caller's speech


@dataclass(frozen=True)
class RouteConfig:
    name: str
    provider: str
    voice: str | None = None  # for ``provider``; fallbacks speak with their own voice
    # providers tried in order when the one speaking fails (gateway/core/failover.py)
    fallback: tuple[str, ...] = ()
    # a provider that has not started the audio of text it was handed this long after is
    # failed over (None: no limit; the default on routes with fallbacks is 2000 ms)
    first_audio_timeout_ms: int | None = None
    greeting: str | None = None
    events_url: str | None = None
    cache_greeting: bool = True
    # an unguessable path segment callers must present: /v1/media/{carrier}/{route}/{token}
    token: str | None = field(default=None, repr=False)
    bot: BotConfig | None = None
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)

    @property
    def providers(self) -> tuple[str, ...]:
        """The route's provider, then its fallbacks, in the order they are tried."""
        return (self.provider, *self.fallback)


@dataclass(frozen=True)
class PlayoutConfig:
    lead_ms: int = 100
    frames_per_write: int = 3
    hangup_mark_timeout_s: float = 5.0


@dataclass(frozen=True)
class LimitsConfig:
    """Every bound on what a client, carrier or provider may make the gateway hold."""

    max_calls: int = 1000
    max_text_chars: int = 20000  # one speak message
    max_utterance_chars: int = 100_000  # text streamed into one utterance
    max_call_text_chars: int = 200_000  # text queued on one call, all utterances
    max_queued_utterances: int = 32  # per call
    max_control_sockets: int = 4  # per call
    start_timeout_s: float = 10.0  # media socket upgraded (or TCP accepted) until start
    media_idle_timeout_s: float = 60.0  # no message at all from the carrier this long
    header_timeout_s: float = 10.0  # an HTTP request's head must arrive within this
    max_connections_per_address: int = 1000  # open connections from one client address
    max_buffered_audio_s: float = 30.0  # provider audio held ahead of playback, per call
    max_provider_message_bytes: int = 4 << 20  # one message from a TTS provider


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    default_route: str | None = None
    carriers: dict[str, CarrierConfig] = field(
        default_factory=lambda: {DEFAULT_CARRIER: CarrierConfig(DEFAULT_CARRIER)})
    playout: PlayoutConfig = field(default_factory=PlayoutConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    control_token: str | None = None
    # "token": the control API needs a token unless it listens on loopback only;
    # "open": serve it without one anywhere (warned at every start)
    control_auth: str = "token"
    log_level: str = "INFO"
    log_format: str = "text"  # "text" for a terminal, "json": one object per line

    def route(self, name: str | None) -> RouteConfig | None:
        return self.routes.get(name or self.default_route or "")


# limits.<name>: (type, minimum, maximum); the defaults are LimitsConfig's
_LIMITS: dict[str, tuple[type, float, float | None]] = {
    "max_calls": (int, 1, None),
    "max_text_chars": (int, 1, None),
    "max_utterance_chars": (int, 1, None),
    "max_call_text_chars": (int, 1, None),
    "max_queued_utterances": (int, 1, 10_000),
    "max_control_sockets": (int, 1, 1000),
    "start_timeout_s": (float, 0.1, 600),
    "media_idle_timeout_s": (float, 1, 3600),
    "header_timeout_s": (float, 0.1, 600),
    "max_connections_per_address": (int, 1, None),
    "max_buffered_audio_s": (float, 1, 3600),
    "max_provider_message_bytes": (int, 4096, 1 << 30),
}


class _Reader:
    """Typed access to a YAML mapping that records problems instead of raising."""

    def __init__(self, problems: list[str]):
        self.problems = problems

    def mapping(self, value: Any, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{key}: expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def get(self, section: dict, name: str, key: str, kind: type, default: Any,
            *, minimum: float | None = None, maximum: float | None = None) -> Any:
        value = section.get(name, default)
        if value is None:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            self.problems.append(f"{key}.{name}: expected {kind.__name__}, got {value!r}")
            return default
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            self.problems.append(f"{key}.{name}: {value!r} is outside {minimum}..{maximum}")
            return default
        return value

    def unknown(self, section: dict, key: str, allowed: set[str]) -> None:
        for name in section:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                self.problems.append(f"{where}: unknown key (allowed: {', '.join(sorted(allowed))})")

    def secret(self, section: dict, name: str, key: str, environ: dict) -> str | None:
        """Read ``name`` (e.g. ``token_env``): the name of an environment variable."""
        var = section.get(name)
        if var is None:
            return None
        if not isinstance(var, str) or not _ENV_NAME.match(var):
            self.problems.append(f"{key}.{name}: must name an environment variable, e.g. MY_TOKEN "
                                 "(secrets are never written into gateway.yaml)")
            return None
        value = environ.get(var)
        if not value:
            self.problems.append(f"{key}.{name}: environment variable {var} is not set")
            return None
        return value


def _remote_provider(r: _Reader, p: dict, key: str, name: str, ptype: str,
                     environ: dict) -> ProviderConfig:
    from gateway.tts.remote.drivers import DEFAULT_ENDPOINTS

    r.unknown(p, key, {"type", "api_key_env", "endpoint", "model", "voice", "options", "pool"})
    if "api_key_env" not in p:
        r.problems.append(f"{key}.api_key_env: required: the environment variable holding "
                          f"the {ptype} API key")
    api_key = r.secret(p, "api_key_env", key, environ)
    endpoint = r.get(p, "endpoint", key, str, DEFAULT_ENDPOINTS[ptype])
    if not re.match(r"^wss?://[^/\s]+", endpoint):
        r.problems.append(f"{key}.endpoint: {endpoint!r} must be a ws:// or wss:// URL")
    voice = r.get(p, "voice", key, str, None)
    if not voice:
        r.problems.append(f"{key}.voice: required (the provider's voice id)")
    options = dict(r.mapping(p.get("options"), f"{key}.options"))
    pk = f"{key}.pool"
    po = r.mapping(p.get("pool"), pk)
    r.unknown(po, pk, _POOL_KEYS)
    pool = {
        "min_idle": r.get(po, "min_idle", pk, int, 2, minimum=0, maximum=1000),
        "max": r.get(po, "max", pk, int, 50, minimum=1, maximum=10000),
        "calls_per_connection": r.get(po, "calls_per_connection", pk, int, 1, minimum=1,
                                      maximum=_SHARE_LIMITS[ptype]),
        "connect_timeout_s": r.get(po, "connect_timeout_s", pk, float, 5.0, minimum=0.1),
        "acquire_timeout_s": r.get(po, "acquire_timeout_s", pk, float, 5.0, minimum=0),
        "idle_timeout_s": r.get(po, "idle_timeout_s", pk, float, None, minimum=1),
        "max_session_s": r.get(po, "max_session_s", pk, float, 3600.0, minimum=1),
        "backoff_base_s": r.get(po, "backoff_base_s", pk, float, 0.5, minimum=0.001),
        "backoff_max_s": r.get(po, "backoff_max_s", pk, float, 30.0, minimum=0.001),
    }
    if pool["min_idle"] > pool["max"]:
        r.problems.append(f"{pk}.min_idle: {pool['min_idle']} is more than max {pool['max']}")
    config = ProviderConfig(name=name, type=ptype, voice=voice or "", options=options,
                            api_key=api_key, endpoint=endpoint, model=r.get(p, "model", key, str, None),
                            pool=pool)
    if api_key and voice:
        problem = _check_remote(config)
        if problem:
            r.problems.append(f"{key}: {problem}")
    return config


def _check_remote(config: ProviderConfig) -> str | None:
    """Let the provider's own protocol module judge the settings (model, voice, options)."""
    from gateway.tts.remote.session import WARM_FORMAT, remote_settings
    from gateway.tts.remote.drivers import DRIVERS

    try:
        driver = DRIVERS[config.type](remote_settings(config))
        key = driver.pool_key(WARM_FORMAT)
        driver.connect(key)
        driver.new_protocol(key)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def parse_config(data: Any, environ: dict | None = None, source: str = "gateway.yaml") -> GatewayConfig:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    environ = dict(os.environ) if environ is None else environ
    problems: list[str] = []
    r = _Reader(problems)
    top = r.mapping(data, "(top level)")
    r.unknown(top, "", {"server", "auth", "providers", "routes", "default_route", "carriers",
                        "playout", "limits", "logging"})

    s = r.mapping(top.get("server"), "server")
    r.unknown(s, "server", {"host", "port", "public_url", "drain_timeout_s"})
    server = ServerConfig(
        host=r.get(s, "host", "server", str, "127.0.0.1"),
        port=r.get(s, "port", "server", int, 8080, minimum=0, maximum=65535),
        public_url=r.get(s, "public_url", "server", str, None),
        drain_timeout_s=r.get(s, "drain_timeout_s", "server", float, 300.0, minimum=0,
                              maximum=86400),
    )
    if server.public_url and not re.match(r"^https?://[^/\s]+", server.public_url):
        problems.append("server.public_url: must look like https://gw.example.com")

    a = r.mapping(top.get("auth"), "auth")
    r.unknown(a, "auth", {"control_token_env", "control"})
    control_token = r.secret(a, "control_token_env", "auth", environ)
    control_auth = r.get(a, "control", "auth", str, "token")
    if control_auth not in ("token", "open"):
        problems.append(f"auth.control: {control_auth!r} is not one of token, open")

    providers: dict[str, ProviderConfig] = {}
    for name, p in r.mapping(top.get("providers"), "providers").items():
        key = f"providers.{name}"
        p = r.mapping(p, key)
        ptype = p.get("type")
        if ptype not in PROVIDER_TYPES:
            problems.append(f"{key}.type: {ptype!r} is not a known provider type "
                            f"(known: {', '.join(PROVIDER_TYPES)})")
            continue
        if ptype == "piper":
            r.unknown(p, key, {"type", "voice", "threads"})
            voice = r.get(p, "voice", key, str, "en_US-joe-medium")
            options = {"threads": r.get(p, "threads", key, int, 2, minimum=1, maximum=16)}
        elif ptype == "fake":  # a timing profile for benchmarks, no network
            r.unknown(p, key, {"type", "handshake_ms", "first_audio_ms", "burst_factor",
                               "sample_rate", "chars_per_second", "max_ahead_s", "encoding"})
            voice = "fake"
            options = {
                "handshake_ms": r.get(p, "handshake_ms", key, float, 250.0, minimum=0),
                "first_audio_ms": r.get(p, "first_audio_ms", key, float, 200.0, minimum=0),
                "burst_factor": r.get(p, "burst_factor", key, float, 4.0, minimum=0.1),
                "sample_rate": r.get(p, "sample_rate", key, int, 24000, minimum=8000),
                "chars_per_second": r.get(p, "chars_per_second", key, float, 15.0, minimum=1),
                "max_ahead_s": r.get(p, "max_ahead_s", key, float, 3.0, minimum=0.1),
                "encoding": r.get(p, "encoding", key, str, "pcm_s16le"),
            }
            if options["encoding"] not in ("pcm_s16le", "mulaw"):
                problems.append(f"{key}.encoding: {options['encoding']!r} is not pcm_s16le or mulaw")
            elif options["encoding"] == "mulaw" and options["sample_rate"] != 8000:
                problems.append(f"{key}.sample_rate: mulaw comes at 8000 Hz only")
            if options["sample_rate"] not in (8000, 16000, 22050, 24000, 44100, 48000):
                problems.append(f"{key}.sample_rate: {options['sample_rate']} is not one of "
                                "8000, 16000, 22050, 24000, 44100, 48000")
        else:
            providers[name] = _remote_provider(r, p, key, name, ptype, environ)
            continue
        providers[name] = ProviderConfig(name=name, type=ptype, voice=voice, options=options)
    if not providers:
        problems.append("providers: at least one provider is needed")

    routes: dict[str, RouteConfig] = {}
    for name, rt in r.mapping(top.get("routes"), "routes").items():
        key = f"routes.{name}"
        rt = r.mapping(rt, key)
        r.unknown(rt, key, {"provider", "fallback", "first_audio_timeout_ms", "voice",
                            "greeting", "events_url", "cache_greeting", "token_env", "bot",
                            "barge_in"})
        provider = rt.get("provider")
        if isinstance(provider, list):
            problems.append(f"{key}.provider: one provider name, got a list; put the providers "
                            f"to fail over to in {key}.fallback")
        elif provider not in providers:
            problems.append(f"{key}.provider: {provider!r} is not a configured provider "
                            f"(configured: {', '.join(providers) or 'none'})")
        fallback = _fallback(r, rt, key, provider, providers)
        timeout_ms = r.get(rt, "first_audio_timeout_ms", key, int, None, minimum=100,
                           maximum=60000)
        if timeout_ms is None and fallback:
            timeout_ms = DEFAULT_FIRST_AUDIO_TIMEOUT_MS
        events_url = r.get(rt, "events_url", key, str, None)
        if events_url and not re.match(r"^https?://", events_url):
            problems.append(f"{key}.events_url: must be an http(s) URL")
        routes[str(name)] = RouteConfig(
            name=str(name), provider=str(provider),
            voice=r.get(rt, "voice", key, str, None),
            fallback=fallback,
            first_audio_timeout_ms=timeout_ms,
            greeting=r.get(rt, "greeting", key, str, None),
            events_url=events_url,
            cache_greeting=r.get(rt, "cache_greeting", key, bool, True),
            token=r.secret(rt, "token_env", key, environ),
            bot=_bot(r, rt.get("bot"), f"{key}.bot", environ),
            barge_in=_barge_in(r, rt.get("barge_in"), f"{key}.barge_in"),
        )

    default_route = r.get(top, "default_route", "", str, None)
    if default_route is not None and default_route not in routes:
        problems.append(f"default_route: {default_route!r} is not a configured route")

    carriers = _carriers(r, top.get("carriers", [DEFAULT_CARRIER]), environ)
    for carrier in carriers.values():  # a carrier's own listener maps its calls to a route
        if carrier.options.get("route") not in (None, *routes):
            problems.append(f"carriers.{carrier.name}.route: {carrier.options['route']!r} is "
                            "not a configured route")

    pl = r.mapping(top.get("playout"), "playout")
    r.unknown(pl, "playout", {"lead_ms", "frames_per_write", "hangup_mark_timeout_s"})
    playout = PlayoutConfig(
        lead_ms=r.get(pl, "lead_ms", "playout", int, 100, minimum=20, maximum=2000),
        frames_per_write=r.get(pl, "frames_per_write", "playout", int, 3, minimum=1, maximum=10),
        hangup_mark_timeout_s=r.get(pl, "hangup_mark_timeout_s", "playout", float, 5.0,
                                    minimum=0, maximum=120),
    )
    if playout.lead_ms < 20 * playout.frames_per_write + 20:
        problems.append(f"playout.lead_ms: {playout.lead_ms} is too small for frames_per_write "
                        f"{playout.frames_per_write}; it needs at least "
                        f"{20 * playout.frames_per_write + 20} so the carrier never runs dry")
    li = r.mapping(top.get("limits"), "limits")
    r.unknown(li, "limits", set(_LIMITS))
    limits = LimitsConfig(**{name: r.get(li, name, "limits", kind, getattr(LimitsConfig, name),
                                         minimum=low, maximum=high)
                             for name, (kind, low, high) in _LIMITS.items()})
    lg = r.mapping(top.get("logging"), "logging")
    r.unknown(lg, "logging", {"level", "format"})
    log_level = str(r.get(lg, "level", "logging", str, "INFO")).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"logging.level: {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    log_format = r.get(lg, "format", "logging", str, "text")
    if log_format not in ("text", "json"):
        problems.append(f"logging.format: {log_format!r} is not one of text, json")

    if problems:
        raise ConfigError(problems, source)
    return GatewayConfig(server=server, providers=providers, routes=routes,
                         default_route=default_route, carriers=carriers,
                         playout=playout, limits=limits, control_token=control_token,
                         control_auth=control_auth, log_level=log_level, log_format=log_format)


def _bot(r: _Reader, value: Any, key: str, environ: dict) -> BotConfig | None:
    if value is None:
        return None
    b = r.mapping(value, key)
    r.unknown(b, key, {"url", "audio", "audio_packet_ms", "secret_env", "connect_timeout_ms",
                       "failure_text", "on_failure", "reconnect_s"})
    url = r.get(b, "url", key, str, "")
    if not re.match(r"^wss?://[^/\s]+", url):
        r.problems.append(f"{key}.url: required, the bot's ws:// or wss:// URL")
    audio = r.get(b, "audio", key, str, "l16/16000")
    if audio not in BOT_AUDIO_FORMATS:
        r.problems.append(f"{key}.audio: {audio!r} is not one of {', '.join(BOT_AUDIO_FORMATS)}")
    packet_ms = r.get(b, "audio_packet_ms", key, int, 20, minimum=20, maximum=200)
    if packet_ms % 20:
        r.problems.append(f"{key}.audio_packet_ms: {packet_ms} is not a multiple of 20")
    on_failure = r.get(b, "on_failure", key, str, "hangup")
    if on_failure not in ("hangup", "continue"):
        r.problems.append(f"{key}.on_failure: {on_failure!r} is not one of hangup, continue")
    return BotConfig(
        url=url, audio=audio, audio_packet_ms=packet_ms,
        secret=r.secret(b, "secret_env", key, environ),
        connect_timeout_ms=r.get(b, "connect_timeout_ms", key, int, 3000, minimum=100,
                                 maximum=60000),
        failure_text=r.get(b, "failure_text", key, str, BotConfig.failure_text),
        on_failure=on_failure,
        reconnect_s=r.get(b, "reconnect_s", key, float, 10.0, minimum=0, maximum=600))


def _barge_in(r: _Reader, value: Any, key: str) -> BargeInConfig:
    b = r.mapping(value, key)
    r.unknown(b, key, {"mode", "min_speech_ms", "min_silence_ms"})
    mode = r.get(b, "mode", key, str, "off")
    if mode not in BARGE_IN_MODES:
        r.problems.append(f"{key}.mode: {mode!r} is not one of {', '.join(BARGE_IN_MODES)}")
    timings = {name: r.get(b, name, key, int, getattr(BargeInConfig, name), minimum=low,
                           maximum=high) for name, (low, high) in BARGE_IN_BOUNDS.items()}
    return BargeInConfig(mode=mode, **timings)


def _fallback(r: _Reader, rt: dict, key: str, provider: Any,
              providers: dict[str, ProviderConfig]) -> tuple[str, ...]:
    """``fallback``: a provider name or a list of them, tried in order after ``provider``."""
    value = rt.get("fallback")
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        r.problems.append(f"{key}.fallback: expected a list of provider names, e.g. "
                          f"[cartesia, local], got {value!r}")
        return ()
    fallback: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in providers:
            r.problems.append(f"{key}.fallback: {name!r} is not a configured provider "
                              f"(configured: {', '.join(providers) or 'none'})")
        elif name == provider or name in fallback:
            r.problems.append(f"{key}.fallback: {name!r} is listed twice (the route's provider "
                              "and each fallback are tried once per utterance)")
        else:
            fallback.append(name)
    return tuple(fallback)


def _carriers(r: _Reader, value: Any, environ: dict) -> dict[str, CarrierConfig]:
    """``carriers:`` is a list of names (defaults for each) or a mapping name -> settings."""
    if isinstance(value, list):
        value = {name: {} for name in value}
    if not isinstance(value, dict) or not value:
        r.problems.append(f"carriers: expected a list or mapping drawn from {', '.join(CARRIERS)}, "
                          f"got {value!r}")
        return {DEFAULT_CARRIER: CarrierConfig(DEFAULT_CARRIER)}
    carriers = {}
    for name, settings in value.items():
        key = f"carriers.{name}"
        if name not in CARRIERS:
            r.problems.append(f"{key}: unknown carrier (known: {', '.join(CARRIERS)})")
            continue
        settings = r.mapping(settings, key)
        spec = CARRIERS[name]
        r.unknown(settings, key, {*spec.options, *spec.secrets, "lead_ms"})
        options = {}
        for option, (kind, default, allowed) in spec.options.items():
            options[option] = r.get(settings, option, key, kind, default)
            if allowed and options[option] not in allowed:
                r.problems.append(f"{key}.{option}: {options[option]!r} is not one of "
                                  f"{', '.join(map(str, allowed))}")
        secrets = {}
        for secret in spec.secrets:
            found = r.secret(settings, secret, key, environ)
            if found:
                secrets[secret.removesuffix("_env")] = found
        for option, problem in spec.check_options(options, secrets) if spec.check_options else ():
            r.problems.append(f"{key}{'.' + option if option else ''}: {problem}")
        lead_ms = r.get(settings, "lead_ms", key, int, None, minimum=0, maximum=2000)
        carriers[name] = CarrierConfig(name, options, secrets, lead_ms)
    return carriers


def load_config(path: str | Path, environ: dict | None = None) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from exc
    return parse_config(data, environ, str(path))
