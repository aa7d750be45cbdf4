"""The per-segment counters failover reads from the protocols, in their corner cases:
Deepgram sentences sent without a Flush once the flush budget is spent, and Uplift
segments held back by the request budget and merged into one request. (Every provider's
normal case, against its fake: test_segment_progress.py.)"""

from __future__ import annotations

import json

from gateway.tts.providers.deepgram.protocol import DeepgramProtocol
from gateway.tts.providers.events import ProviderDone
from gateway.tts.providers.uplift.protocol import UpliftProtocol

FLUSHED = json.dumps({"type": "Flushed", "sequence_id": 0})


def test_deepgram_counts_the_sentences_each_answered_flush_covers():
    p = DeepgramProtocol(flush_limit=2, flush_reserve=0)  # two flushes, then none
    p.begin("t")
    assert any("Flush" in m for m in p.send("t", "One."))
    assert p.segments_done("t") == 0
    assert p.receive(FLUSHED) == []
    assert p.segments_done("t") == 1
    assert any("Flush" in m for m in p.send("t", "Two."))
    assert not any("Flush" in m for m in p.send("t", "Three."))  # the budget is spent
    assert p.receive(FLUSHED) == []
    assert p.segments_done("t") == 2  # "Three." has no flush of its own yet
    assert p.finish("t") == ['{"type": "Flush"}']  # the end is always flushed
    assert p.receive(FLUSHED) == [ProviderDone("t")]
    assert p.segments_done("t") is None  # over: the turn's end says it all


def _ready_uplift(**kw) -> UpliftProtocol:
    p = UpliftProtocol("v_meklc281", **kw)
    p.connection_made()
    p.receive({"type": "ready", "sessionId": "s"})
    return p


def test_uplift_counts_segments_merged_into_one_request_together():
    now = [1000.0]
    p = _ready_uplift(requests_per_minute=2, clock=lambda: now[0])
    p.begin("t", encoding="ULAW_8000_8")
    p.send("t", "One.")
    p.send("t", "Two.")
    assert p.send("t", "Three.") == [] and p.send("t", "Four.") == []
    [merged] = p.finish("t")
    assert json.loads(merged)["text"] == "Three. Four."
    assert p.segments_done("t") == 0
    p.receive({"type": "audio_end", "requestId": "t.2"})  # out of order: not yet
    assert p.segments_done("t") == 0
    p.receive({"type": "audio_end", "requestId": "t.1"})
    assert p.segments_done("t") == 2
    # the one request that carries the last two segments: both done at its end
    assert p.receive({"type": "audio_end", "requestId": "t.3"}) == [ProviderDone("t")]
