"""Load and validate ``gateway.yaml``.

Validation collects every problem, each naming the key (``routes.demo.provider: ...``),
so ``tts-gateway check-config`` can print them all at once. Secrets are never literal in
the file: keys ending in ``_env`` name the environment variable that holds them.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from gateway.carriers.registry import CARRIERS, DEFAULT_CARRIER
from gateway.flow.steps import FlowConfig, check_flows, parse_flow
from gateway.prompts.settings import PromptsConfig, read_prompts
from gateway.schema import Problems, computed, read, secret, setting
from gateway.tts.providers.registry import PROVIDERS

PROVIDER_TYPES = ("piper", "fake", *PROVIDERS)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists each one, naming its key."""

    def __init__(self, problems: list[str], source: str = "gateway.yaml"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = setting(8080, 0, 65535)
    public_url: str | None = setting(pattern=r"^https?://[^/\s]+",
                                     hint="like https://gw.example.com")
    # on SIGTERM: how long calls in progress may go on before they are hung up
    drain_timeout_s: float = setting(300.0, 0, 86400)


@dataclass(frozen=True)
class AuthConfig:
    control_token: str | None = secret()
    # "token": the control API needs a token unless it listens on loopback only;
    # "open": serve it without one anywhere (warned at every start)
    control: str = setting("token", choices=("token", "open"))


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR, in any case
    format: str = setting("text", choices=("text", "json"))  # json: one object per line

    def problems(self, key: str) -> list[str]:
        if self.level.upper() not in LOG_LEVELS:
            return [f"{key}.level: {self.level.upper()!r} is not one of {', '.join(LOG_LEVELS)}"]
        return []


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


_FAKE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


@dataclass(frozen=True)
class FakeProviderOptions:
    """``providers.<name>`` of ``type: fake``: a timing profile for benchmarks, no network
    (gateway/tts/fake.py)."""

    handshake_ms: float = setting(250.0, 0)
    first_audio_ms: float = setting(200.0, 0)
    burst_factor: float = setting(4.0, 0.1)
    sample_rate: int = setting(24000, 8000)
    chars_per_second: float = setting(15.0, 1)
    max_ahead_s: float = setting(3.0, 0.1)
    encoding: str = "pcm_s16le"

    def problems(self, key: str) -> list[str]:
        found = []
        if self.encoding not in ("pcm_s16le", "mulaw"):
            found.append(f"{key}.encoding: {self.encoding!r} is not pcm_s16le or mulaw")
        elif self.encoding == "mulaw" and self.sample_rate != 8000:
            found.append(f"{key}.sample_rate: mulaw comes at 8000 Hz only")
        if self.sample_rate not in _FAKE_RATES:
            found.append(f"{key}.sample_rate: {self.sample_rate} is not one of "
                         f"{', '.join(map(str, _FAKE_RATES))}")
        return found


@dataclass(frozen=True)
class PoolSettings:
    """``providers.<name>.pool``: the warm connection pool of a remote provider
    (gateway/tts/remote/pool.py)."""

    min_idle: int = setting(2, 0, 1000)  # kept open and handshaken; /readyz waits for them
    max: int = setting(50, 1, 10000)
    # at most the provider's SPEC.share_limit (checked by parse_config)
    calls_per_connection: int = setting(1, 1)
    connect_timeout_s: float = setting(5.0, 0.1)
    acquire_timeout_s: float = setting(5.0, 0)
    idle_timeout_s: float | None = setting(None, 1)  # None: the provider's idle limit
    max_session_s: float = setting(3600.0, 1)
    backoff_base_s: float = setting(0.5, 0.001)
    backoff_max_s: float = setting(30.0, 0.001)

    def problems(self, key: str) -> list[str]:
        if self.min_idle > self.max:
            return [f"{key}.min_idle: {self.min_idle} is more than max {self.max}"]
        return []


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
    pool: PoolSettings = field(default_factory=PoolSettings)


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


@dataclass(frozen=True)
class BotConfig:
    """``routes.<name>.bot``: the gateway dials the bot's WebSocket when a call starts on
    the route and speaks the bot protocol over it (gateway/bot/)."""

    url: str = ""  # required: the bot's ws:// or wss:// URL
    # the caller's audio to the bot
    audio: str = setting("l16/16000", choices=BOT_AUDIO_FORMATS)
    audio_packet_ms: int = setting(20, 20, 200)  # in steps of 20
    secret: str | None = secret()  # signs the upgrade (HMAC-SHA256)
    connect_timeout_ms: int = setting(3000, 100, 60000)
    # the bot cannot be reached: say this, then hang up ("hangup") or go on ("continue",
    # the route's greeting and the control API only)
    failure_text: str | None = "Sorry, this line cannot take your call right now. Goodbye."
    on_failure: str = setting("hangup", choices=("hangup", "continue"))
    reconnect_s: float = setting(10.0, 0, 600)  # how long a dropped bot socket is redialed

    def problems(self, key: str) -> list[str]:
        found = []
        if not re.match(r"^wss?://[^/\s]+", self.url):
            found.append(f"{key}.url: required, the bot's ws:// or wss:// URL")
        if self.audio_packet_ms % 20:
            found.append(f"{key}.audio_packet_ms: {self.audio_packet_ms} is not a multiple of 20")
        return found


@dataclass(frozen=True)
class BargeInConfig:
    """``routes.<name>.barge_in``: what from the caller interrupts the gateway's speech."""

    mode: str = setting("off", choices=BARGE_IN_MODES)
    # caller speech this long before it counts as barge-in
    min_speech_ms: int = setting(140, 20, 5000)
    min_silence_ms: int = setting(500, 20, 10000)  # silence this long ends the caller's speech


#: barge_in's timings and their bounds, in the config and when a bot changes them
BARGE_IN_BOUNDS = {f.name: (f.metadata["minimum"], f.metadata["maximum"])
                   for f in fields(BargeInConfig) if f.name != "mode"}


@dataclass(frozen=True)
class RouteConfig:
    # name, provider and fallback are read by parse_config (they refer to the providers)
    name: str = computed("")
    provider: str = computed("")
    voice: str | None = None  # for ``provider``; fallbacks speak with their own voice
    # providers tried in order when the one speaking fails (gateway/core/failover.py)
    fallback: tuple[str, ...] = computed(())
    # a provider that has not started the audio of text it was handed this long after is
    # failed over (None: no limit; the default on routes with fallbacks is 2000 ms)
    first_audio_timeout_ms: int | None = setting(None, 100, 60000)
    greeting: str | None = None
    events_url: str | None = setting(pattern=r"^https?://", hint="an http(s) URL")
    cache_greeting: bool = True
    # an unguessable path segment callers must present: /v1/media/{carrier}/{route}/{token}
    token: str | None = secret()
    bot: BotConfig | None = None
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    flow: FlowConfig | None = computed(None)  # an IVR flow (gateway/flow/), read by parse_config

    @property
    def providers(self) -> tuple[str, ...]:
        """The route's provider, then its fallbacks, in the order they are tried."""
        return (self.provider, *self.fallback)


@dataclass(frozen=True)
class PlayoutConfig:
    lead_ms: int = setting(100, 20, 2000)
    frames_per_write: int = setting(3, 1, 10)
    hangup_mark_timeout_s: float = setting(5.0, 0, 120)

    def problems(self, key: str) -> list[str]:
        needed = 20 * self.frames_per_write + 20
        if self.lead_ms < needed:
            return [f"{key}.lead_ms: {self.lead_ms} is too small for frames_per_write "
                    f"{self.frames_per_write}; it needs at least {needed} so the carrier "
                    "never runs dry"]
        return []


@dataclass(frozen=True)
class LimitsConfig:
    """Every bound on what a client, carrier or provider may make the gateway hold."""

    max_calls: int = setting(1000, 1)
    max_text_chars: int = setting(20000, 1)  # one speak message
    max_utterance_chars: int = setting(100_000, 1)  # text streamed into one utterance
    max_call_text_chars: int = setting(200_000, 1)  # text queued on one call, all utterances
    max_queued_utterances: int = setting(32, 1, 10_000)  # per call
    max_control_sockets: int = setting(4, 1, 1000)  # per call
    # media socket upgraded (or TCP accepted) until start
    start_timeout_s: float = setting(10.0, 0.1, 600)
    # no message at all from the carrier this long
    media_idle_timeout_s: float = setting(60.0, 1, 3600)
    header_timeout_s: float = setting(10.0, 0.1, 600)  # an HTTP request's head, in full
    # open connections from one client address
    max_connections_per_address: int = setting(1000, 1)
    # provider audio held ahead of playback, per call
    max_buffered_audio_s: float = setting(30.0, 1, 3600)
    max_provider_message_bytes: int = setting(4 << 20, 4096, 1 << 30)  # one provider message


@dataclass(frozen=True)
class PromptCacheConfig:
    """``prompt_cache``: prompts' frames kept on disk (gateway/prompts/store.py)."""

    dir: str | None = None  # default: the user's cache folder (~/.cache/tts-gateway/prompts)
    max_bytes: int = setting(256 << 20, 0, 1 << 40)
    # the most recently used prompts also kept in memory (0: every hit reads its file)
    memory_bytes: int = setting(32 << 20, 0, 1 << 36)
    warm_on_start: bool = False  # synthesize every route's prompts before /readyz is ready


_REDIS_URL = re.compile(r"^(rediss?://(\[[0-9A-Fa-f:]+\]|[^:@/\s\[\]]+)(:\d{1,5})?(/\d{0,5})?"
                        r"|unix:///\S+)$")


_INSTANCE_URL = r"^https?://[^/\s]+/?$"


@dataclass(frozen=True)
class ClusterConfig:
    """``cluster``: the call directory and instance registry on Redis (gateway/cluster/),
    so that any instance answers the control API for any call. Off without ``redis_url``."""

    # without a password in it (checked in problems(), never echoed): that comes from the
    # variable redis_password_env names
    redis_url: str | None = None
    redis_password: str | None = secret(what="the Redis password (AUTH)")
    # the address the other instances reach this one at (its own, not a load balancer's)
    instance_url: str | None = setting(pattern=_INSTANCE_URL, hint="an http(s)://host:port URL")
    # or the name of the environment variable holding it (Kubernetes: built from the pod's IP
    # by the downward API, deploy/k8s/deployment.yaml)
    instance_url_env: str | None = setting(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                           hint="an environment variable's name")
    heartbeat_s: float = setting(2.0, 0.1, 60)
    ttl_s: float = setting(10.0, 0.5, 600)  # a dead instance's calls leave the directory after
    redis_timeout_s: float = setting(0.5, 0.05, 10)  # one Redis round trip, at most
    forward_timeout_s: float = setting(5.0, 0.1, 60)  # a request forwarded to the owner
    # where carriers reach this instance directly (server.public_url is the shared address):
    # the answer endpoints point a new call here when the instance it asked has no room
    public_url: str | None = setting(pattern=r"^https?://[^/\s]+", hint="an https:// URL")
    # no room: active calls >= capacity (limits.max_calls) times this
    redirect_at: float = setting(1.0, 0.05, 1.0)
    # prompts shared through Redis: the largest entry, and how long it stays unused there
    prompt_max_bytes: int = setting(4 << 20, 1024, 64 << 20)
    prompt_ttl_s: float = setting(7 * 86400.0, 60, 366 * 86400.0)

    def problems(self, key: str) -> list[str]:
        if self.redis_url is None:
            return []
        found = []
        if "@" in self.redis_url:
            found.append(f"{key}.redis_url: holds credentials; put the password in the "
                         "variable redis_password_env names (the URL is not shown here)")
        elif not _REDIS_URL.match(self.redis_url):
            found.append(f"{key}.redis_url: {self.redis_url!r} must be a redis://host:port/db, "
                         "rediss:// or unix:///path URL")
        if (self.instance_url is None) == (self.instance_url_env is None):
            found.append(f"{key}.instance_url: exactly one of instance_url and instance_url_env "
                         "is required with redis_url (the address the other instances reach "
                         "this one at, e.g. http://10.0.0.5:8080)")
        if self.ttl_s < 2 * self.heartbeat_s:
            found.append(f"{key}.ttl_s: {self.ttl_s} must be at least twice heartbeat_s "
                         f"({self.heartbeat_s}), or a late heartbeat drops live calls")
        return found

    def with_environ(self, problems: list[str], key: str,
                     environ: dict) -> ClusterConfig:
        """The config with ``instance_url`` read from the variable ``instance_url_env``
        names (problems appended when it is unset or not a URL)."""
        if self.redis_url is None or self.instance_url_env is None or self.instance_url:
            return self
        value = environ.get(self.instance_url_env, "")
        if not value:
            problems.append(f"{key}.instance_url_env: environment variable "
                            f"{self.instance_url_env} is not set")
        elif len(value) > 300 or not re.match(_INSTANCE_URL, value):
            problems.append(f"{key}.instance_url_env: environment variable "
                            f"{self.instance_url_env} holds {value[:80]!r}, which must be an "
                            "http(s)://host:port URL")
        else:
            return replace(self, instance_url=value)
        return self


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
    prompt_cache: PromptCacheConfig = field(default_factory=PromptCacheConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)  # gateway/prompts/
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # gateway/cluster/
    control_token: str | None = None
    # "token": the control API needs a token unless it listens on loopback only;
    # "open": serve it without one anywhere (warned at every start)
    control_auth: str = "token"
    log_level: str = "INFO"
    log_format: str = "text"  # "text" for a terminal, "json": one object per line

    def route(self, name: str | None) -> RouteConfig | None:
        return self.routes.get(name or self.default_route or "")


def _remote_provider(problems: Problems, p: dict, key: str, name: str, ptype: str,
                     environ: dict) -> ProviderConfig:
    problems.unknown(p, key, {"type", "api_key_env", "endpoint", "model", "voice", "options",
                              "pool"})
    if "api_key_env" not in p:
        problems.append(f"{key}.api_key_env: required: the environment variable holding "
                          f"the {ptype} API key")
    api_key = problems.secret(p, "api_key_env", key, environ)
    endpoint = problems.value(p, "endpoint", key, str, PROVIDERS[ptype].endpoint)
    if not re.match(r"^wss?://[^/\s]+", endpoint):
        problems.append(f"{key}.endpoint: {endpoint!r} must be a ws:// or wss:// URL")
    voice = problems.value(p, "voice", key, str, None)
    if not voice:
        problems.append(f"{key}.voice: required (the provider's voice id)")
    options = dict(problems.mapping(p.get("options"), f"{key}.options"))
    pk = f"{key}.pool"
    pool = read(problems, PoolSettings, p.get("pool"), pk)
    share_limit = PROVIDERS[ptype].share_limit
    if pool.calls_per_connection > share_limit:
        problems.append(f"{pk}.calls_per_connection: {pool.calls_per_connection!r} is "
                          f"outside 1..{share_limit}")
        pool = replace(pool, calls_per_connection=1)
    config = ProviderConfig(name=name, type=ptype, voice=voice or "", options=options,
                            api_key=api_key, endpoint=endpoint,
                            model=problems.value(p, "model", key, str, None), pool=pool)
    if api_key and voice:
        problem = _check_remote(config)
        if problem:
            problems.append(f"{key}: {problem}")
    return config


def _check_remote(config: ProviderConfig) -> str | None:
    """Let the provider's own protocol module judge the settings (model, voice, options)."""
    from gateway.tts.remote.session import WARM_FORMAT, remote_settings

    try:
        driver = PROVIDERS[config.type].new_driver(remote_settings(config))
        key = driver.pool_key(WARM_FORMAT)
        driver.connect(key)
        driver.new_protocol(key)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def parse_config(data: Any, environ: dict | None = None,
                 source: str = "gateway.yaml") -> GatewayConfig:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    environ = dict(os.environ) if environ is None else environ
    problems = Problems()
    top = problems.mapping(data, "(top level)")
    problems.unknown(top, "", {"server", "auth", "providers", "routes", "default_route", "carriers",
                        "playout", "limits", "logging", "prompt_cache",
                        "prompts", "cluster"})
    server = read(problems, ServerConfig, top.get("server"), "server")
    auth = read(problems, AuthConfig, top.get("auth"), "auth", environ)

    providers: dict[str, ProviderConfig] = {}
    for name, p in problems.mapping(top.get("providers"), "providers").items():
        key = f"providers.{name}"
        p = problems.mapping(p, key)
        ptype = p.get("type")
        if ptype not in PROVIDER_TYPES:
            problems.append(f"{key}.type: {ptype!r} is not a known provider type "
                            f"(known: {', '.join(PROVIDER_TYPES)})")
            continue
        if ptype == "piper":
            problems.unknown(p, key, {"type", "voice", "threads"})
            voice = problems.value(p, "voice", key, str, "en_US-joe-medium")
            options = {"threads": problems.value(p, "threads", key, int, 2, minimum=1,
                                                 maximum=16)}
        elif ptype == "fake":  # a timing profile for benchmarks, no network
            voice = "fake"
            options = asdict(read(problems, FakeProviderOptions, p, key,
                                  also_allowed=("type",)))
        else:
            providers[name] = _remote_provider(problems, p, key, name, ptype, environ)
            continue
        providers[name] = ProviderConfig(name=name, type=ptype, voice=voice, options=options)
    if not providers:
        problems.append("providers: at least one provider is needed")

    routes: dict[str, RouteConfig] = {}
    for name, rt in problems.mapping(top.get("routes"), "routes").items():
        key = f"routes.{name}"
        rt = problems.mapping(rt, key)
        provider = rt.get("provider")
        if isinstance(provider, list):
            problems.append(f"{key}.provider: one provider name, got a list; put the providers "
                            f"to fail over to in {key}.fallback")
        elif provider not in providers:
            problems.append(f"{key}.provider: {provider!r} is not a configured provider "
                            f"(configured: {', '.join(providers) or 'none'})")
        fallback = _fallback(problems, rt, key, provider, providers)
        route = read(problems, RouteConfig, rt, key, environ,
                     also_allowed=("provider", "fallback", "flow"), name=str(name),
                     provider=str(provider), fallback=fallback,
                     flow=parse_flow(problems, rt.get("flow"), f"{key}.flow"))
        if route.first_audio_timeout_ms is None and fallback:
            route = replace(route, first_audio_timeout_ms=DEFAULT_FIRST_AUDIO_TIMEOUT_MS)
        routes[str(name)] = route

    check_flows(problems, {n: rt.flow for n, rt in routes.items() if rt.flow is not None},
                bots=frozenset(n for n, rt in routes.items() if rt.bot is not None),
                providers=frozenset(providers))

    default_route = problems.value(top, "default_route", "", str, None)
    if default_route is not None and default_route not in routes:
        problems.append(f"default_route: {default_route!r} is not a configured route")

    carriers = _carriers(problems, top.get("carriers", [DEFAULT_CARRIER]), environ)
    for carrier in carriers.values():  # a carrier's own listener maps its calls to a route
        if carrier.options.get("route") not in (None, *routes):
            problems.append(f"carriers.{carrier.name}.route: {carrier.options['route']!r} is "
                            "not a configured route")

    playout = read(problems, PlayoutConfig, top.get("playout"), "playout")
    limits = read(problems, LimitsConfig, top.get("limits"), "limits")
    logging_ = read(problems, LoggingConfig, top.get("logging"), "logging")
    prompt_cache = read(problems, PromptCacheConfig, top.get("prompt_cache"), "prompt_cache")
    prompts = read_prompts(problems, top.get("prompts"), providers)
    cluster = read(problems, ClusterConfig, top.get("cluster"), "cluster", environ
                   ).with_environ(problems, "cluster", environ)

    if problems:
        raise ConfigError(list(problems), source)
    return GatewayConfig(server=server, providers=providers, routes=routes,
                         default_route=default_route, carriers=carriers,
                         playout=playout, limits=limits, prompt_cache=prompt_cache, prompts=prompts,
                         cluster=cluster,
                         control_token=auth.control_token,
                         control_auth=auth.control, log_level=logging_.level.upper(),
                         log_format=logging_.format)


def _fallback(problems: Problems, rt: dict, key: str, provider: Any,
              providers: dict[str, ProviderConfig]) -> tuple[str, ...]:
    """``fallback``: a provider name or a list of them, tried in order after ``provider``."""
    value = rt.get("fallback")
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        problems.append(f"{key}.fallback: expected a list of provider names, e.g. "
                          f"[cartesia, local], got {value!r}")
        return ()
    fallback: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in providers:
            problems.append(f"{key}.fallback: {name!r} is not a configured provider "
                              f"(configured: {', '.join(providers) or 'none'})")
        elif name == provider or name in fallback:
            problems.append(f"{key}.fallback: {name!r} is listed twice (the route's provider "
                              "and each fallback are tried once per utterance)")
        else:
            fallback.append(name)
    return tuple(fallback)


def _carriers(problems: Problems, value: Any, environ: dict) -> dict[str, CarrierConfig]:
    """``carriers:`` is a list of names (defaults for each) or a mapping name -> settings."""
    if isinstance(value, list):
        value = {name: {} for name in value}
    if not isinstance(value, dict) or not value:
        problems.append(f"carriers: expected a list or mapping drawn from {', '.join(CARRIERS)}, "
                          f"got {value!r}")
        return {DEFAULT_CARRIER: CarrierConfig(DEFAULT_CARRIER)}
    carriers = {}
    for name, settings in value.items():
        key = f"carriers.{name}"
        if name not in CARRIERS:
            problems.append(f"{key}: unknown carrier (known: {', '.join(CARRIERS)})")
            continue
        settings = problems.mapping(settings, key)
        spec = CARRIERS[name]
        problems.unknown(settings, key, {*spec.options, *spec.secrets, "lead_ms"})
        options = {}
        for option, (kind, default, allowed) in spec.options.items():
            options[option] = problems.value(settings, option, key, kind, default)
            if allowed and options[option] not in allowed:
                problems.append(f"{key}.{option}: {options[option]!r} is not one of "
                                  f"{', '.join(map(str, allowed))}")
        secrets = {}
        for secret_key in spec.secrets:
            found = problems.secret(settings, secret_key, key, environ)
            if found:
                secrets[secret_key.removesuffix("_env")] = found
        for where, problem in spec.check_options(options, secrets) if spec.check_options else ():
            problems.append(f"{key}{'.' + where if where else ''}: {problem}")
        lead_ms = problems.value(settings, "lead_ms", key, int, None, minimum=0, maximum=2000)
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
