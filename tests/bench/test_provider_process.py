"""The bench with its provider on a real socket: a faithful fake in its own process
(Inworld's JSON with base64 audio, Deepgram's binary frames), read by the real gateway
process. Behaviour only: the figures go to the printed output."""

from __future__ import annotations

import json

import pytest

from gateway.bench.load import bench_config, run_once
from gateway.bench.provider import LagMonitor, provider_config
from gateway.carriers.events import MediaFormat
from gateway.config import ConfigError, parse_config
from gateway.tts.providers.registry import PROVIDERS
from gateway.tts.remote.session import remote_settings


@pytest.mark.parametrize("kind,audio", [("inworld", "mulaw8k"), ("deepgram", "pcm24k")])
async def test_a_short_bench_reads_its_audio_from_the_provider_process(kind, audio, tmp_path):
    run = await run_once(3, 3.0, pinned=False, audio=audio, provider=kind,
                         ramp_per_second=10.0, interrupt_fraction=0.0, workdir=tmp_path)
    print({k: run[k] for k in ("provider", "provider_audio", "lateness_p99_ms",
                               "gateway_cpu_percent_of_core", "load_core_cpu_percent",
                               "provider_cpu_percent_of_core", "provider_lag_p99_ms")})
    assert run["provider"] == kind and run["provider_audio"] == audio
    assert run["calls_connected"] == 3 and run["calls_failed"] == 0
    assert run["frames_received"] > 0
    # the first audio of every call came from the provider's socket: the gateway's metrics
    # for the provider named after it, and the provider process's own count
    assert run["provider_first_chunks"] >= 3
    assert run["provider_requests"] >= 3 and run["provider_connections"] >= 1
    assert run["provider_cpu_percent_of_core"] is not None
    assert run["provider_lag_p99_ms"] is not None


@pytest.mark.parametrize("kind", ["inworld", "deepgram"])
@pytest.mark.parametrize("audio", ["mulaw8k", "pcm24k"])
def test_the_bench_config_of_a_socket_provider_is_valid(kind, audio):
    config = parse_config(bench_config(8080, 30.0, 100, audio, kind, 9000),
                          {"TTS_BENCH_PROVIDER_KEY": "bench-key"})
    provider = config.providers[kind]
    assert provider.endpoint.startswith("ws://127.0.0.1:9000/")
    assert config.routes["bench"].provider == kind


def test_a_pcm_bench_asks_the_provider_for_24_khz_pcm():
    assert provider_config("deepgram", 1, {"encoding": "pcm_s16le", "sample_rate": 24000}
                           )["options"] == {"audio_format": "linear16", "sample_rate": 24000}
    assert provider_config("inworld", 1, {"encoding": "mulaw", "sample_rate": 8000}
                           )["options"] == {}


def test_the_lag_monitor_reports_bounded_quantiles():
    monitor = LagMonitor()
    assert monitor.quantile_ms(0.99) is None
    for lag_ms in [0.1] * 98 + [3.0, 5000.0]:
        monitor.counts[min(monitor.BINS, int(lag_ms / monitor.BIN_MS))] += 1
        monitor.max_ms = max(monitor.max_ms, lag_ms)
    assert monitor.quantile_ms(0.5) == monitor.BIN_MS
    assert monitor.quantile_ms(0.99) == 3.25
    assert monitor.quantile_ms(1.0) == 5000.0  # the overflow bin: the maximum


def test_inworld_and_deepgram_take_the_configured_audio_format_on_a_mulaw_carrier():
    env = {"TTS_BENCH_PROVIDER_KEY": "bench-key"}
    data = bench_config(8080, 30.0, 100, "pcm24k", "deepgram", 9000)
    deepgram = PROVIDERS["deepgram"].new_driver(
        remote_settings(parse_config(data, env).providers["deepgram"]))
    assert deepgram.pool_key(MediaFormat("mulaw", 8000)) == ("linear16", 24000)
    data = bench_config(8080, 30.0, 100, "pcm24k", "inworld", 9000)
    inworld = PROVIDERS["inworld"].new_driver(
        remote_settings(parse_config(data, env).providers["inworld"]))
    proto = inworld.new_protocol(None)
    create = json.loads(inworld.begin(proto, "c1", None, MediaFormat("mulaw", 8000))[0])
    assert create["create"]["audioConfig"] == {"audioEncoding": "PCM", "sampleRateHertz": 24000}
    assert "audio_format" not in create["create"] and "sample_rate" not in create["create"]


@pytest.mark.parametrize("kind,options", [("inworld", {"audio_format": "MP3"}),
                                          ("inworld", {"audio_format": "MULAW",
                                                       "sample_rate": 24000}),
                                          ("deepgram", {"audio_format": "linear16",
                                                        "sample_rate": 22050})])
def test_an_audio_format_the_provider_cannot_stream_is_a_config_error(kind, options):
    data = bench_config(8080, 30.0, 100, "mulaw8k", kind, 9000)
    data["providers"][kind]["options"] = options
    with pytest.raises(ConfigError):
        parse_config(data, {"TTS_BENCH_PROVIDER_KEY": "bench-key"})
