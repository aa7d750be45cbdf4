"""Prometheus metrics, one registry per application.

Names follow Prometheus conventions (base units, ``_seconds``, ``_total``); labels are
bounded (provider, carrier, route, outcome, kind), never call ids.

Every label takes its values from a fixed set, declared in :data:`LABEL_VALUES` (or the
carriers, or the configuration's provider names): ``labels()`` counts any other value as
``other``, so a value a carrier or provider sends (an error code, say) can never make a
new series. A new labelled metric must declare its labels' values, or ``Metrics()`` fails.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

from gateway.carriers.events import CarrierErrorKind, StartRefusalKind
from gateway.carriers.registry import CARRIERS as CARRIER_SPECS
from gateway.flow.steps import VERBS as FLOW_VERBS
from gateway.flow.webhook import WEBHOOK_FAILURES
from gateway.prompts.settings import PROMPT_ERROR_KINDS

# Latency buckets from 1 ms to 10 s: first audio lives between tens and hundreds of ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                   0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
# Gateway-added latency and pacing lateness are sub-millisecond to tens of ms.
FINE_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003,
                0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)
# The delay the gateway adds to the caller's audio on its way to a bot: tens of µs to a few ms.
CALLER_AUDIO_BUCKETS = (0.000025, 0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005,
                        0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05,
                        0.1, 0.25, 1.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST

OTHER = "other"
CARRIERS = frozenset(CARRIER_SPECS)
#: Labels whose values are names from the configuration (bounded by the operator).
CONFIG_NAMED = frozenset({"provider", "from_provider", "to_provider"})

#: ``CarrierProtocolError.kind`` (gateway/carriers/events.py).
CARRIER_ERROR_KINDS = frozenset({
    *get_args(CarrierErrorKind),
    # a start refused (gateway/carriers/base.py) and a socket aiohttp dropped (media.py)
    *get_args(StartRefusalKind), "message_too_big", "bad_frame"})
#: Why a connection was refused or closed (gateway/http/guard.py).
CONNECTION_REFUSALS = ("capacity", "draining", "start_timeout", "idle_timeout",
                       "header_timeout", "per_address")
#: ``CarrierFault.code``: the codes carriers document (each one's ``SPEC.fault_codes``),
#: nothing they may invent.
CARRIER_FAULT_CODES = frozenset().union(*(spec.fault_codes for spec in CARRIER_SPECS.values()))
#: ``ProviderProtocolError.kind``: a provider frame the gateway cannot read.
PROVIDER_FRAME_KINDS = frozenset({
    "not_json", "bad_frame", "bad_message", "bad_payload", "bad_audio", "missing_field",
    "unexpected_audio", "unknown_context", "unknown_event", "unknown_request",
    "unknown_status", "unknown_type", "audio_after_done"})
#: ``TtsError.kind`` and ``ProviderError.kind`` (gateway/tts, gateway/core/failover.py).
TTS_ERROR_KINDS = frozenset({
    # the gateway's own: connections, pool, sessions, start-up, first-audio timeout
    "connect", "handshake", "connection_closed", "internal", "not_started", "not_ready",
    "pool_closed", "pool_exhausted", "start", "no_audio",
    # more audio than a call may hold (limits.max_buffered_audio_s), a message over
    # limits.max_provider_message_bytes
    "overflow", "oversize",
    # the embedded voice
    "bad_voice", "synthesis",
    # the providers' error frames, as each driver classifies them
    "already_exists", "auth", "auth_failed", "bad_request", "concurrency", "context_expired",
    "context_not_found", "duplicate_request", "failed_precondition", "flush_limit",
    "idle_timeout", "invalid_argument", "invalid_message", "invalid_request",
    "invalid_voice", "model", "no_context", "permission_denied", "policy", "provider",
    "provider_error", "quota", "rate_limit", "rate_limit_exceeded", "rate_limited",
    "server", "server_error", "session_paused", "synthesis_failed", "text_too_long",
    "timeout", "too_many_contexts", "unavailable", "unknown_context", "unsupported_format",
    "voice",
    # frames that could not be read
    *(f"frame_{kind}" for kind in PROVIDER_FRAME_KINDS),
})

#: Why a control request was refused (gateway/http/control.py; the speech limits are
#: gateway/core/speech.py's REFUSALS).
CONTROL_ERROR_KINDS = frozenset({
    "unauthorized", "not_local", "unknown_call", "bad_request", "too_large",
    "too_many_sockets", "queue_full", "utterance_text", "call_text", "events_url",
    "unknown_prompt", "cluster_unavailable", "owner_unreachable", "cross_origin"})

#: control requests one instance forwards to the call's owner (gateway/cluster/forward.py)
CLUSTER_FORWARD_OPS = frozenset({"get", "speak", "play", "interrupt", "hangup", "list",
                                 "control"})

#: metric attribute -> label -> its values (``carrier`` is :data:`CARRIERS` everywhere).
LABEL_VALUES: dict[str, dict[str, Collection[str]]] = {
    "calls": {"outcome": {"completed", "disconnected", "hangup", "rejected", "shutdown",
                          "timeout"}},
    "connections_refused": {"reason": CONNECTION_REFUSALS},
    "utterances": {"outcome": {"played", "interrupted", "failed"}},
    "barge_ins": {"cause": {"api", "speech", "dtmf"}},
    "carrier_errors": {"kind": CARRIER_ERROR_KINDS},
    "carrier_faults": {"code": CARRIER_FAULT_CODES},
    "auth_failures": {"reason": {"signature", "bearer", "jwt", "basic", "token"}},
    "tts_errors": {"kind": TTS_ERROR_KINDS},
    "failovers": {"reason": {"connect", "error", "closed", "timeout"}},
    "control_errors": {"kind": CONTROL_ERROR_KINDS},
    "cluster_forward": {"op": CLUSTER_FORWARD_OPS},
    "cluster_redis_errors": {"op": {"heartbeat", "lookup", "list", "prompt_get",
                                    "prompt_put"}},
    "cluster_redirects": {"reason": {"draining", "full"}},
    "prompt_cache": {"result": {"hit", "miss"}},
    "prompt_cache_shared": {"result": {"hit", "miss", "rejected", "stored"}},
    "flow_steps": {"verb": FLOW_VERBS},
    "flow_webhooks": {"outcome": {"ok", *WEBHOOK_FAILURES}},
    "prompt_cache_errors": {"kind": {"corrupt", "read", "write"}},
    "prompt_errors": {"kind": PROMPT_ERROR_KINDS},
    # caller audio a bot did not get: its socket read too slowly (gateway/bot/audio.py), or
    # the gateway was redialing it (gateway/bot/dialer.py)
    "bot_audio_dropped": {"reason": {"slow_reader", "disconnected"}},
    "pool_connections": {"state": {"idle", "leased"}},
    "pool_failures": {"kind": {"connect", "handshake", "exhausted"}},
    "pool_reconnects": {"reason": {"server_close", "error", "dirty", "idle_refresh",
                                   "rotated", "evicted"}},
    "bot_connections": {"outcome": {"connected", "reconnected", "dropped", "unreachable",
                                    "gave_up"}},
}


def bounded(value: object, allowed: Collection[str], other: str = OTHER) -> str:
    """``value`` as a label value if it is one of ``allowed``, else ``other``."""
    text = value if type(value) is str else str(value)
    return text if text in allowed else other


class BoundedLabels:
    """A labelled metric whose ``labels()`` maps every value outside its label's fixed
    set to ``other``; anything else is the metric's own (``inc``, ``observe``, ...)."""

    def __init__(self, metric: MetricWrapperBase, allowed: dict[str, Collection[str] | None]):
        self.metric = metric
        #: label -> its values (``other`` included), or None for configuration names
        self.allowed = {name: None if values is None else frozenset(values) | {OTHER}
                        for name, values in allowed.items()}
        self._sets = tuple(self.allowed[name] for name in metric._labelnames)

    def labels(self, *values: object):
        return self.metric.labels(*(value if allowed is None else bounded(value, allowed)
                                    for value, allowed in zip(values, self._sets)))

    def __getattr__(self, name: str):
        return getattr(self.metric, name)


def _bound_labels(metrics: Metrics) -> None:
    """Wrap every labelled metric of ``metrics`` in :class:`BoundedLabels`."""
    for attr, metric in list(vars(metrics).items()):
        if not isinstance(metric, MetricWrapperBase) or not metric._labelnames:
            continue
        declared = LABEL_VALUES.get(attr, {})
        allowed: dict[str, Collection[str] | None] = {}
        for name in metric._labelnames:
            if name in declared:
                allowed[name] = declared[name]
            elif name == "carrier":
                allowed[name] = CARRIERS
            elif name in CONFIG_NAMED:
                allowed[name] = None
            else:
                raise ValueError(f"metric {attr}: declare the values of its label {name!r} "
                                 "in gateway.metrics.LABEL_VALUES")
        setattr(metrics, attr, BoundedLabels(metric, allowed))


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # The process's CPU, memory, open fds and start time (process_*) and the Python
        # version (python_info): the default registry has them, an own registry must ask.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        ns = "tts_gateway"
        self.tts_first_chunk = Histogram(
            "tts_first_chunk_seconds", "Text sent to the TTS provider -> its first audio byte.",
            ["provider"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.first_frame = Histogram(
            "first_frame_seconds",
            "Speak request -> first frame of that speech sent to the carrier.",
            ["carrier"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.gateway_added = Histogram(
            "gateway_added_latency_seconds",
            "First provider audio byte in -> first carrier frame out (the gateway's own cost).",
            ["carrier"], namespace=ns, registry=r, buckets=FINE_BUCKETS)
        self.pacing_lateness = Histogram(
            "pacing_lateness_seconds",
            "How late the media clock woke for a 20 ms tick, relative to its absolute deadline.",
            namespace=ns, registry=r, buckets=FINE_BUCKETS)
        self.active_calls = Gauge(
            "active_calls", "Calls in progress.", ["carrier"], namespace=ns, registry=r)
        self.worker_restarts = Counter(
            "worker_restarts_total",
            "Times the supervisor of serve --workers started this worker again after it died "
            "(the count goes on in the worker that replaces it; 0 in a single process).",
            namespace=ns, registry=r)
        self.calls = Counter(
            "calls_total", "Calls ended, by outcome.", ["carrier", "outcome"],
            namespace=ns, registry=r)
        self.frames_sent = Counter(
            "frames_sent_total", "20 ms audio frames sent to carriers.", ["carrier"],
            namespace=ns, registry=r)
        self.underruns = Counter(
            "underruns_total",
            "Times a call's playout queue ran dry in the middle of an utterance.",
            ["carrier"], namespace=ns, registry=r)
        self.barge_ins = Counter(
            "barge_ins_total", "Interrupts that cut speech short, by cause (api, speech, "
            "dtmf).", ["carrier", "cause"],
            namespace=ns, registry=r)
        self.utterances = Counter(
            "utterances_total", "Utterances finished, by outcome (played, interrupted, failed).",
            ["carrier", "outcome"], namespace=ns, registry=r)
        self.carrier_errors = Counter(
            "carrier_errors_total", "Malformed or unexpected carrier messages, by kind.",
            ["carrier", "kind"], namespace=ns, registry=r)
        self.carrier_faults = Counter(
            "carrier_faults_total", "Errors the carrier reported about what we sent, by code.",
            ["carrier", "code"], namespace=ns, registry=r)
        self.connections_refused = Counter(
            "connections_refused_total",
            "Connections refused or closed by a limit, by reason (capacity, draining, "
            "start_timeout, idle_timeout, header_timeout, per_address).", ["reason"],
            namespace=ns, registry=r)
        self.auth_failures = Counter(
            "carrier_auth_failures_total",
            "Carrier connections and answer requests refused before the upgrade, by reason "
            "(signature, token, jwt, basic, ...).", ["carrier", "reason"], namespace=ns,
            registry=r)
        self.tts_errors = Counter(
            "tts_errors_total", "TTS provider errors, by kind.", ["provider", "kind"],
            namespace=ns, registry=r)
        self.failovers = Counter(
            "failovers_total", "Utterances (or their rest) handed to a route's next provider, "
            "by why the one speaking failed (connect, error, closed, timeout).",
            ["from_provider", "to_provider", "reason"], namespace=ns, registry=r)
        self.control_errors = Counter(
            "control_errors_total", "Rejected control API requests, by kind.", ["kind"],
            namespace=ns, registry=r)
        self.prompt_cache = Counter(
            "prompt_cache_total", "Route prompt cache look-ups, by result (hit, miss).",
            ["result"], namespace=ns, registry=r)
        self.flow_steps = Counter(
            "flow_steps_total", "IVR flow steps started, by verb.", ["verb"], namespace=ns,
            registry=r)
        self.flow_webhooks = Counter(
            "flow_webhooks_total", "IVR flow webhook calls, by outcome (ok, or why it failed "
            "and the flow went on at the fallback step).", ["outcome"], namespace=ns,
            registry=r)
        self.prompt_cache_errors = Counter(
            "prompt_cache_errors_total", "Prompt cache entries that could not be used, by kind "
            "(corrupt: removed, read, write).", ["kind"], namespace=ns, registry=r)
        self.prompt_cache_bytes = Gauge(
            "prompt_cache_bytes", "Bytes of prompt cache entries on disk.", namespace=ns,
            registry=r)
        self.prompt_cache_entries = Gauge(
            "prompt_cache_entries", "Prompt cache entries on disk.", namespace=ns, registry=r)
        self.prompt_cache_evictions = Counter(
            "prompt_cache_evictions_total", "Prompt cache entries removed to stay within "
            "prompt_cache.max_bytes (least recently used first).", namespace=ns, registry=r)
        self.prompt_chars_saved = Counter(
            "prompt_cache_chars_saved_total", "Characters of text the provider did not have "
            "to synthesize because the prompt was cached.", ["provider"], namespace=ns,
            registry=r)
        self.prompt_errors = Counter(
            "prompt_errors_total", "Prompts that could not be played, by why (not_found, "
            "not_audio, corrupt, too_large, too_long, unreachable, timeout, ...).", ["kind"],
            namespace=ns, registry=r)
        self.bot_audio_dropped = Counter(
            "bot_audio_dropped_seconds_total",
            "Seconds of caller audio a bot's socket did not get, by reason (slow_reader, "
            "disconnected).", ["reason"], namespace=ns, registry=r)
        self.caller_audio_delay = Histogram(
            "caller_audio_delay_seconds",
            "Carrier frame of caller audio in -> the bot's (or a listening control socket's) "
            "packet holding it handed to the socket.", ["carrier"], namespace=ns, registry=r,
            buckets=CALLER_AUDIO_BUCKETS)
        self.vad_frames = Counter(
            "vad_frames_total",
            "Caller audio frames handed to the voice activity detector.", ["carrier"],
            namespace=ns, registry=r)
        self.backpressure_skips = Counter(
            "backpressure_skips_total",
            "Ticks in which a call's carrier socket was too far behind to take more audio.",
            ["carrier"], namespace=ns, registry=r)
        self.pool_connections = Gauge(
            "pool_connections", "Provider connections in the pool, by state (idle, leased).",
            ["provider", "state"], namespace=ns, registry=r)
        self.cluster_forward = Histogram(
            "cluster_forward_seconds",
            "A control request for a call another instance holds: directory lookup, forward "
            "and its answer.", ["op"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.cluster_redis_errors = Counter(
            "cluster_redis_errors_total",
            "Redis operations of the cluster directory that failed or timed out, by op.",
            ["op"], namespace=ns, registry=r)
        self.cluster_redirects = Counter(
            "cluster_redirects_total",
            "Answer documents that pointed a new call at another instance's public_url, by "
            "why this one did not take it (draining, full).", ["reason"], namespace=ns,
            registry=r)
        self.prompt_cache_shared = Counter(
            "prompt_cache_shared_total",
            "Prompt look-ups in Redis after a local miss (hit, miss, rejected: corrupt or "
            "too large) and prompts written there (stored).", ["result"], namespace=ns,
            registry=r)
        self.cluster_redis_up = Gauge(
            "cluster_redis_up", "1 when the last write of the cluster directory reached Redis.",
            namespace=ns, registry=r)
        self.pool_acquire = Histogram(
            "pool_acquire_seconds", "Time for a call to lease a provider connection.",
            ["provider"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.pool_hits = Counter(
            "pool_hits_total", "Leases served by a warm connection.", ["provider"],
            namespace=ns, registry=r)
        self.pool_misses = Counter(
            "pool_misses_total", "Leases that had to open a connection (handshake in the path).",
            ["provider"], namespace=ns, registry=r)
        self.pool_opens = Counter(
            "pool_opens_total", "Provider connections opened and handshaken.", ["provider"],
            namespace=ns, registry=r)
        self.pool_failures = Counter(
            "pool_failures_total",
            "Failed opens and leases, by kind (connect, handshake, exhausted).",
            ["provider", "kind"], namespace=ns, registry=r)
        self.pool_reconnects = Counter(
            "pool_reconnects_total",
            "Connections replaced, by reason (server_close, error, dirty, idle_refresh, "
            "rotated).", ["provider", "reason"], namespace=ns, registry=r)
        self.bot_connections = Counter(
            "bot_connections_total", "Sockets the gateway dialed to routes' bots, by outcome "
            "(connected, reconnected, dropped, unreachable, gave_up).", ["outcome"],
            namespace=ns, registry=r)
        _bound_labels(self)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
