"""The per-frame microbenchmark of a bot call (gateway/bench/botframes.py) runs, and its
digest of what the bots read is reproducible (what a before/after comparison relies on)."""

from gateway.bench import botframes


def test_every_frame_reaches_the_bot_and_the_digest_is_reproducible():
    _, transports = botframes.run(5, 3, keep=True)
    assert [len(t.frames) for t in transports] == [150] * 5  # one packet per frame
    # a 16-bit length and a mask key before each 640-byte packet
    assert all(len(frame) == 4 + 4 + 640 for t in transports for frame in t.frames)
    first = botframes.digest(transports)
    _, playing = botframes.run(5, 3, playing=True, keep=True)
    # the bots' bytes do not depend on the gateway speaking (nor on the random mask keys)
    assert botframes.digest(playing) == first


def test_the_timing_run_prints_a_figure(capsys):
    assert botframes.main(["--calls", "2", "--seconds", "1", "--repeat", "1"]) == 0
    assert "per inbound frame" in capsys.readouterr().out
