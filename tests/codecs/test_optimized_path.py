"""The resampler's exact kernel (issue 13): every output is its filter's exact sum, rounded.

The taps are dyadic numbers coarse enough that int16 samples times one phase's taps sum
without any rounding in float64, so the matrix product (BLAS, any summation order, any
blocking) gives the mathematically exact value, and the output cannot depend on how the
input was cut into chunks. Checked against scipy's ``upfirdn`` with the same taps (plain
float64 loops: exact for these operands too), for every supported pair and chunking.

Against the frozen float32 kernel it replaced (reference_resample.py), outputs differ by at
most 1 LSB on a few samples in a thousand: the rounding errors of the old float32 sums.
"""

import warnings

import numpy as np
import pytest
from reference_resample import StreamResampler as Float32Resampler

from telcodecs import Transcoder
from telcodecs.resample import SUPPORTED_INPUT_RATES, SUPPORTED_OUTPUT_RATES, StreamResampler

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PAIRS = sorted((i, o) for i in SUPPORTED_INPUT_RATES for o in SUPPORTED_OUTPUT_RATES if i != o)
CHUNKINGS_MS = [20, 40, 100, 7, 1000]


def _speechlike(rate: int, seconds: float, seed: int) -> bytes:
    """Loud noise plus a clipped tone: exercises rounding and the int16 clamp."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    x = rng.normal(0, 9000, n) + 40000 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _run(resampler, pcm: bytes, chunk_bytes: int) -> bytes:
    out = b"".join(resampler.process(c) for c in _chunks(pcm, chunk_bytes))
    return out + resampler.flush()


def _chunk_bytes(in_rate: int, chunk_ms: int) -> int:
    return in_rate * chunk_ms // 1000 * 2 + (1 if chunk_ms == 7 else 0)  # odd cuts too


def _exact_reference(in_rate: int, out_rate: int, pcm: bytes) -> np.ndarray:
    """The stream plus flush, as one upfirdn with the resampler's own taps."""
    signal = pytest.importorskip("scipy.signal")
    bank = StreamResampler(in_rate, out_rate)._bank
    prototype = bank.phase_filters[:, ::-1].T.reshape(-1)  # taps as applied, gain included
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    tail = np.zeros(-(-bank.group_delay_upsampled // bank.up))  # what flush feeds
    y = signal.upfirdn(prototype, np.concatenate((x, tail)), bank.up, bank.down)
    count = -(-(len(x) + len(tail)) * bank.up // bank.down)
    return np.clip(np.rint(y[:count]), -32768, 32767).astype("<i2")


@pytest.mark.parametrize("in_rate,out_rate", PAIRS)
@pytest.mark.parametrize("chunk_ms", CHUNKINGS_MS)
def test_resampler_output_is_the_exact_filter_sum_whatever_the_chunking(in_rate, out_rate,
                                                                        chunk_ms):
    pcm = _speechlike(in_rate, 0.5, seed=in_rate + out_rate)
    out = _run(StreamResampler(in_rate, out_rate), pcm, _chunk_bytes(in_rate, chunk_ms))
    assert out == _exact_reference(in_rate, out_rate, pcm).tobytes()


@pytest.mark.parametrize("in_rate,out_rate", PAIRS)
def test_reused_buffers_of_equal_chunks_change_no_sample(in_rate, out_rate):
    """Equal chunks reuse the last chunk's buffers (a carrier's 20 ms frames); a chunk of
    another size, an odd byte, a flush and a reset between them leave no trace."""
    pcm = _speechlike(in_rate, 0.6, seed=in_rate * 3 + out_rate)
    frame = in_rate // 50 * 2
    sizes = [frame] * 7 + [frame // 2, 3] + [frame] * 5 + [frame * 3 + 1] + [frame] * 6
    resampler = StreamResampler(in_rate, out_rate)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(resampler.process(pcm[start:start + size]))
        start += size
    if resampler._bank.row_filters is not None:  # the reused layout is what was tested
        assert resampler._row_plan is not None and \
            resampler._history is resampler._row_plan.history
    assert b"".join(pieces) + resampler.flush() == \
        _exact_reference(in_rate, out_rate, pcm[:start - start % 2]).tobytes()
    # the same resampler after its flush, and another after a reset mid-stream
    again = _run(resampler, pcm, frame)
    interrupted = StreamResampler(in_rate, out_rate)
    for chunk in _chunks(pcm[:frame * 4], frame):
        interrupted.process(chunk)
    interrupted.reset()
    assert again == _run(interrupted, pcm, frame) == \
        _exact_reference(in_rate, out_rate, pcm).tobytes()


@pytest.mark.parametrize("in_rate,out_rate", PAIRS)
def test_within_one_lsb_of_the_float32_kernel(in_rate, out_rate):
    pcm = _speechlike(in_rate, 1.0, seed=in_rate * out_rate)
    new = np.frombuffer(_run(StreamResampler(in_rate, out_rate), pcm, 4000), dtype="<i2")
    old = np.frombuffer(_run(Float32Resampler(in_rate, out_rate), pcm, 4000), dtype="<i2")
    differ = np.abs(new.astype(int) - old.astype(int))
    print(f"\n{in_rate}->{out_rate}: {np.count_nonzero(differ)} of {len(new)} samples differ")
    assert len(new) == len(old)
    assert differ.max() <= 1
    assert np.count_nonzero(differ) <= 0.005 * len(new)


@pytest.mark.parametrize("src,dst", [
    (("pcm_s16le", 24000), ("mulaw", 8000)),
    (("pcm_s16le", 24000), ("alaw", 8000)),
    (("pcm_s16le", 22050), ("mulaw", 8000)),
    (("mulaw", 8000), ("l16", 16000)),
    (("alaw", 8000), ("pcm_s16le", 16000)),
    (("mulaw", 8000), ("pcm_s16le", 24000)),
])
def test_transcoder_is_decode_resample_encode(src, dst):
    """The transcoder equals audioop decode, the bytes resampler, audioop encode."""
    decode = {"mulaw": audioop.ulaw2lin, "alaw": audioop.alaw2lin}
    encode = {"mulaw": audioop.lin2ulaw, "alaw": audioop.lin2alaw}
    pcm = _speechlike(src[1], 1.0, seed=13)
    data = encode[src[0]](pcm, 2) if src[0] in encode else pcm
    chunk = src[1] // 50 * (1 if src[0] in encode else 2)
    transcoder = Transcoder(*src, *dst)
    reference = StreamResampler(src[1], dst[1])
    new, old = [], []
    for index, piece in enumerate(_chunks(data, chunk)):
        new.append(transcoder.feed(piece))
        old.append(reference.process(decode[src[0]](piece, 2) if src[0] in decode else piece))
        if index % 10 == 9:  # utterance ends
            new.append(transcoder.flush())
            old.append(reference.flush())
    old_pcm = b"".join(old)
    expected = encode[dst[0]](old_pcm, 2) if dst[0] in encode else old_pcm
    assert b"".join(new) == expected
