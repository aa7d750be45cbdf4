"""Prometheus metrics, one registry per application.

Names follow Prometheus conventions (base units, ``_seconds``, ``_total``); labels are
bounded (provider, carrier, route, outcome, kind), never call ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets from 1 ms to 10 s: first audio lives between tens and hundreds of ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                   0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
# Gateway-added latency and pacing lateness are sub-millisecond to tens of ms.
FINE_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003,
                0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


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
            "first_frame_seconds", "Speak request -> first frame of that speech sent to the carrier.",
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
            "barge_ins_total", "Interrupts that cut speech short.", ["carrier"],
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
        self.backpressure_skips = Counter(
            "backpressure_skips_total",
            "Ticks in which a call's carrier socket was too far behind to take more audio.",
            ["carrier"], namespace=ns, registry=r)
        self.pool_connections = Gauge(
            "pool_connections", "Provider connections in the pool, by state (idle, leased).",
            ["provider", "state"], namespace=ns, registry=r)
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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
