"""Streaming polyphase FIR sample-rate conversion of s16le PCM for telephony.

:class:`StreamResampler` converts mono s16le PCM by the rational ratio
``out_rate / in_rate`` (reduced with :func:`math.gcd`, e.g. 22050 -> 8000 is
160/441) with a linear-phase Kaiser-window low-pass designed for the telephone band:

=============  =============  ==============  ===============
output band    passband edge  stopband edge   added delay
=============  =============  ==============  ===============
8 kHz           3400 Hz        4600 Hz         ~2.4 ms
16 kHz          7000 Hz        8600 Hz         ~1.8 ms
24 kHz          10500 Hz       12000 Hz        ~1.9 ms
=============  =============  ==============  ===============

(24 kHz from 22.05 kHz input keeps the input's band: 9500 Hz pass, 11025 Hz stop.)

The band is chosen by the lower of the two rates, so 8000 -> 16000 upsampling uses
the 8 kHz band (it suppresses the images above 4.6 kHz). The stopband is designed
for ~90 dB, which is about where int16 output rounding puts the noise floor anyway.
Input between the output's Nyquist frequency and the stopband edge (4.0-4.6 kHz for
8 kHz output) is only partly attenuated; it aliases to 3.4-4.0 kHz, above the
telephone band.

Streaming contract:

* ``process`` returns every output sample whose input is complete, right away: after
  ``n`` input samples in total, exactly ``ceil(n * out_rate / in_rate)`` output samples
  have been returned. Nothing is held back beyond the filter's own group delay.
* Chunked processing is bit-exact with one-shot processing, whatever the chunking.
  Each output is its filter's exact sum, rounded: the taps are dyadic numbers for
  which float64 sums of int16 samples never round, so the summation order (BLAS's,
  any blocking) cannot change a sample.
* An odd trailing byte is kept and joined with the next chunk; it is never padded.
* ``flush`` feeds the group delay's worth of zeros, returns what comes out, and
  resets the stream, so the output of a whole utterance is its input times the ratio
  plus ``delay_seconds`` of tail. A dangling odd byte is dropped by ``flush``.
* Equal rates are an exact pass-through with zero delay.

Supported: any rate in ``SUPPORTED_INPUT_RATES`` to any in ``SUPPORTED_OUTPUT_RATES``,
and any positive rate to itself. Filter tables are built once per (in_rate, out_rate)
pair and shared by all instances; only the output phases actually needed are computed.
"""

from __future__ import annotations

import functools
import math
from typing import Any
from dataclasses import dataclass

import numpy as np

from .framer import whole_samples

__all__ = ["SUPPORTED_INPUT_RATES", "SUPPORTED_OUTPUT_RATES", "StreamResampler"]

SUPPORTED_INPUT_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
SUPPORTED_OUTPUT_RATES = frozenset({8000, 16000, 24000})  # wideband: Vonage, Exotel, Telnyx

#: (passband edge, stopband edge) in Hz, keyed by the lower of the two rates.
_BAND_EDGES_HZ = {8000: (3400.0, 4600.0), 16000: (7000.0, 8600.0),
                  22050: (9500.0, 11025.0), 24000: (10500.0, 12000.0)}
_STOPBAND_ATTENUATION_DB = 90.0

_INT16_MIN, _INT16_MAX = -32768, 32767
# as 0-d float64 arrays: a ufunc converts a Python int operand on every call
_INT16_MIN_F, _INT16_MAX_F = np.array(float(_INT16_MIN)), np.array(float(_INT16_MAX))
_INT16_MIN_F.setflags(write=False)
_INT16_MAX_F.setflags(write=False)
# Outputs per row of the filter matrix (whole phase cycles): small rows waste few
# multiplications on the matrix's zeros, and eight keep the matrix product fast.
_ROW_OUTPUTS = 8
# OpenBLAS runs a product on several threads above m*n*k = 65536 * 4 (gemm) and, for one
# row, m*n = 2304 * 4 (gemv); on a busy server those threads cost far more than they save,
# so products stay below both. Pairs whose row matrix is too big for that (22.05 and
# 44.1 kHz input: 80 to 320 phases) gather each output's window instead.
_GEMM_SINGLE_THREAD_MNK = 65536 * 4
_GEMV_SINGLE_THREAD_MN = 2304 * 4
# Outputs per gathered step: a 20 ms chunk at 16 kHz output fits in one.
_MIN_SEGMENT_OUTPUTS = 320
# float64 holds every integer below 2**53 exactly; int16 samples are below 2**15.
_EXACT_BITS = 52
_SAMPLE_BITS = 15
_NO_OUTPUT = np.zeros(0, dtype="<i2")
_NO_OUTPUT.setflags(write=False)


@dataclass(frozen=True)
class _PolyphaseBank:
    """The prototype low-pass of one (in_rate, out_rate) pair, laid out for streaming.

    Output ``n`` sits at upsampled time ``n * down``; its newest input sample is
    ``n * down // up`` and its filter phase ``n * down % up``. Phases repeat every ``up``
    outputs ("cycle positions" ``0 .. up - 1``, starting at phase 0) while the input
    advances ``down`` samples.

    The taps are multiples of a power of two, coarse enough that every product and every
    partial sum of an output (int16 samples times one phase's taps) is exact in float64:
    the result does not depend on the order of summation, so BLAS may add in any order
    and the output never depends on how the input was chunked. Filters are time-reversed
    (they multiply oldest-first windows) and include the interpolation gain ``up``.

    Few phases (``up <= 8``: every pair without 22.05 or 44.1 kHz): outputs are computed
    in rows of ``row_outputs`` (whole cycles, from cycle position 0). A row reads
    ``row_length`` consecutive inputs, the next row starts ``row_advance`` later, and
    ``row_filters`` (``row_length`` x ``row_outputs``, mostly zeros) holds each output's
    filter at its place in that window: a run of rows is one matrix product.

    Many phases: ``cycle_filters`` holds the filters in cycle order, repeated to cover
    ``max_segment`` consecutive outputs from any starting point, so a run of outputs
    reads its filters as one contiguous slice; their windows are gathered.
    """

    up: int
    down: int
    taps_per_phase: int
    group_delay_upsampled: int  # prototype centre, in samples at in_rate * up
    delay_seconds: float
    # (up, taps_per_phase): the filter of phase p, oldest input first, as applied.
    phase_filters: np.ndarray
    # cycle position (0 <= m < up) whose phase is p, indexed by p.
    cycle_position_of_phase: tuple[int, ...]
    # Rows (few phases), else None.
    row_filters: np.ndarray | None
    row_outputs: int
    row_advance: int
    row_length: int
    max_rows: int  # rows per matrix product
    # Gathered windows (many phases), else None.
    # (max_segment + up, taps_per_phase): filter of cycle position m, m >= 0.
    cycle_filters: np.ndarray | None
    # (max_segment + up,): how far (in input samples) the newest input of cycle
    # position m lies past that of position 0.
    cycle_input_advance: np.ndarray | None
    max_segment: int


def _kaiser_lowpass(cutoff_hz: float, transition_hz: float, sample_rate: float) -> np.ndarray:
    """Windowed-sinc low-pass (Kaiser's design formulas), odd length, unit DC gain."""
    attenuation = _STOPBAND_ATTENUATION_DB
    beta = 0.1102 * (attenuation - 8.7)
    transition_rad = 2.0 * math.pi * transition_hz / sample_rate
    order = math.ceil((attenuation - 7.95) / (2.285 * transition_rad))
    order += order % 2  # even order: odd length, integer centre, exact linear phase
    n = np.arange(order + 1) - order / 2
    taps = np.sinc(2.0 * cutoff_hz / sample_rate * n) * np.kaiser(order + 1, beta)
    return taps / taps.sum()


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _exact_taps(phases: np.ndarray) -> np.ndarray:
    """``phases`` rounded to multiples of a power of two, the finest step for which any
    output (int16 samples times one phase's taps) sums exactly in float64."""
    worst_gain = float(np.abs(phases).sum(axis=1).max())
    step_bits = _EXACT_BITS - _SAMPLE_BITS - math.ceil(math.log2(worst_gain)) - 1
    return np.ldexp(np.rint(np.ldexp(phases, step_bits)), -step_bits)


@functools.cache
def _polyphase_bank(in_rate: int, out_rate: int) -> _PolyphaseBank:
    divisor = math.gcd(in_rate, out_rate)
    up, down = out_rate // divisor, in_rate // divisor
    pass_hz, stop_hz = _BAND_EDGES_HZ[min(in_rate, out_rate)]
    upsampled_rate = float(in_rate * up)
    prototype = _kaiser_lowpass((pass_hz + stop_hz) / 2, stop_hz - pass_hz, upsampled_rate)
    centre = (len(prototype) - 1) // 2

    taps = -(-len(prototype) // up)
    padded = np.zeros(taps * up)
    padded[: len(prototype)] = prototype * up
    # padded[p + j*up] multiplies x[k - j] for an output at upsampled time k*up + p.
    phase_filters = _exact_taps(padded.reshape(taps, up).T[:, ::-1])

    cycle_position_of_phase = [0] * up
    for cycle_position, phase in enumerate((np.arange(up) * down % up).tolist()):
        cycle_position_of_phase[phase] = cycle_position
    common: dict[str, Any] = dict(
        up=up,
        down=down,
        taps_per_phase=taps,
        group_delay_upsampled=centre,
        delay_seconds=centre / upsampled_rate,
        phase_filters=_read_only(np.ascontiguousarray(phase_filters)),
        cycle_position_of_phase=tuple(cycle_position_of_phase),
    )
    if up <= _ROW_OUTPUTS:
        return _PolyphaseBank(**common, **_row_layout(phase_filters, up, down),
                              cycle_filters=None, cycle_input_advance=None, max_segment=0)
    max_segment = up * -(-_MIN_SEGMENT_OUTPUTS // up)
    position = np.arange(max_segment + up, dtype=np.int64)
    return _PolyphaseBank(
        **common, row_filters=None, row_outputs=0, row_advance=0, row_length=0, max_rows=0,
        cycle_filters=_read_only(np.ascontiguousarray(phase_filters[position * down % up])),
        cycle_input_advance=_read_only(position * down // up),
        max_segment=max_segment,
    )


def _row_layout(phase_filters: np.ndarray, up: int, down: int) -> dict[str, Any]:
    taps = phase_filters.shape[1]
    row_outputs = up * -(-_ROW_OUTPUTS // up)
    position = np.arange(row_outputs)
    phase_at, newest_at = position * down % up, position * down // up
    row_length = int(newest_at[-1]) + taps
    row_filters = np.zeros((row_length, row_outputs))
    for column in range(row_outputs):
        row_filters[newest_at[column]:newest_at[column] + taps, column] = \
            phase_filters[phase_at[column]]
    assert row_filters.size < _GEMV_SINGLE_THREAD_MN, "one-row products would run on threads"
    return dict(
        row_filters=_read_only(row_filters),
        row_outputs=row_outputs,
        row_advance=row_outputs // up * down,
        row_length=row_length,
        max_rows=_GEMM_SINGLE_THREAD_MNK // row_filters.size,
    )


@dataclass(slots=True)
class _RowPlan:
    """A chunk's row products laid out once, for a stream of equal chunks (a carrier's
    20 ms frames): the next chunk of ``samples`` samples at upsampled time ``first_time``,
    after the history this plan left (``history``, a view of ``work`` where the next
    chunk's windows read it), has the same layout, so its buffers are reused instead of
    allocated (most of a 20 ms chunk's cost). The zeros around the input in ``work`` stay
    zeros: only the chunk's place and the history's are written."""

    samples: int
    first_time: int
    next_time: int
    work: np.ndarray
    history: np.ndarray  # work[front:front + taps - 1]
    chunk: slice  # where the chunk goes in work
    left: np.ndarray  # the view of work holding the history the chunk leaves
    windows: np.ndarray  # a strided view of work
    row_filters: np.ndarray
    products: np.ndarray
    values: np.ndarray  # the outputs owed, a view of products

    def run(self, samples: np.ndarray) -> np.ndarray:
        self.work[self.chunk] = samples
        # straight from the strided windows: cheaper than copying them first at this size
        np.matmul(self.windows, self.row_filters, out=self.products)
        self.history[:] = self.left  # (numpy copies overlapping views safely)
        return self.values


def _rounded(values: np.ndarray) -> np.ndarray:
    """Exact sums (float64) as int16 samples: rounded, clamped."""
    np.rint(values, out=values)
    # (two ufuncs: np.clip's dispatch costs more than both on a 20 ms chunk)
    np.minimum(values, _INT16_MAX_F, out=values)
    np.maximum(values, _INT16_MIN_F, out=values)
    return values.astype("<i2")


class StreamResampler:
    """Stateful streaming resampler for mono s16le PCM (see the module docstring)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        supported = in_rate in SUPPORTED_INPUT_RATES and out_rate in SUPPORTED_OUTPUT_RATES
        if in_rate != out_rate and not supported:
            raise ValueError(
                f"unsupported resampling {in_rate} -> {out_rate} Hz: input rates are "
                f"{sorted(SUPPORTED_INPUT_RATES)}, output rates {sorted(SUPPORTED_OUTPUT_RATES)}"
            )
        if in_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {in_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._bank = None if in_rate == out_rate else _polyphase_bank(in_rate, out_rate)
        self.reset()

    @property
    def delay_seconds(self) -> float:
        """Group delay the filter adds, in seconds (0.0 for equal rates)."""
        return 0.0 if self._bank is None else self._bank.delay_seconds

    def reset(self) -> None:
        """Forget all stream state: history, phase and any dangling odd byte."""
        self._odd_byte = b""
        if self._bank is not None:
            # Input history, oldest first; starts as the zeros before the stream.
            self._history = np.zeros(self._bank.taps_per_phase - 1)
            # Upsampled time of the next output, relative to self._history[0].
            self._next_output_time = (self._bank.taps_per_phase - 1) * self._bank.up
        self._row_plan: _RowPlan | None = None
        self._chunk_samples = -1  # the last chunk's length

    def process(self, pcm16le: bytes) -> bytes:
        """Resample one chunk; returns all output that this chunk completes."""
        if self._bank is None:
            data, self._odd_byte = whole_samples(self._odd_byte, pcm16le)
            return data
        return self.process_to_array(pcm16le).tobytes()

    def process_to_array(self, pcm16le: bytes) -> np.ndarray:
        """:meth:`process`, returning the output as an int16 array (resampling rates only):
        a transcoder encodes it to G.711 without a round trip through bytes."""
        data, self._odd_byte = whole_samples(self._odd_byte, pcm16le)
        return self.process_samples(np.frombuffer(data, dtype="<i2"))

    def process_samples(self, samples: np.ndarray) -> np.ndarray:
        """Resample whole samples given as an array (int16, or float32 holding integers,
        e.g. decoded G.711); returns the int16 output (resampling rates only)."""
        # Long chunks (a provider may send a whole sentence) go through gathering in 20 ms
        # pieces: the gathered windows stay in cache, about twice as fast as one big gather.
        step = self.in_rate // 50
        bank = self._bank
        assert bank is not None, "resampling rates only"
        if bank.row_filters is not None or len(samples) <= step:
            return self._filter(samples)
        return np.concatenate([self._filter(samples[i:i + step])
                               for i in range(0, len(samples), step)])

    def flush(self) -> bytes:
        """Emit the tail held in the filter, then reset for the next stream."""
        return self.flush_to_array().tobytes() if self._bank is not None else self._reset_empty()

    def flush_to_array(self) -> np.ndarray:
        """:meth:`flush`, returning the tail as an int16 array (resampling rates only)."""
        bank = self._bank
        assert bank is not None, "resampling rates only"
        zeros_needed = -(-bank.group_delay_upsampled // bank.up)
        tail = self._filter(np.zeros(zeros_needed, dtype=np.float32))
        self.reset()
        return tail

    def _reset_empty(self) -> bytes:
        self.reset()
        return b""

    def _filter(self, samples: np.ndarray) -> np.ndarray:
        """Append ``samples`` to the history; return every output they complete (int16)."""
        bank = self._bank
        assert bank is not None
        history = self._history
        first_time = self._next_output_time
        plan = self._row_plan
        if (plan is not None and plan.history is history and plan.samples == len(samples)
                and plan.first_time == first_time):
            values = plan.run(samples)
            self._next_output_time = plan.next_time
            return _rounded(values)
        taps, up, down = bank.taps_per_phase, bank.up, bank.down
        total = len(history) + len(samples)
        count = -(-(total * up - first_time) // down)
        if count <= 0:
            self._history = np.concatenate((history, samples))
            return _NO_OUTPUT

        # a layout is kept from the second chunk of a length on (a provider's chunks of any
        # length would only pay for keeping it)
        repeated, self._chunk_samples = len(samples) == self._chunk_samples, len(samples)
        if bank.row_filters is not None:
            keep = repeated and len(history) == taps - 1
            values, buffer, plan = self._rows(samples, first_time, count, keep)
        else:
            (values, buffer), plan = self._gathered(samples, first_time, count), None
        dropped = total - (taps - 1)
        self._next_output_time = first_time + count * down - dropped * up
        if plan is not None:
            # the next equal chunk reuses this one's layout, its history kept in place
            plan.next_time = self._next_output_time
            plan.left = buffer[dropped:total]
            plan.history = buffer[:taps - 1]
            plan.history[:] = plan.left
            self._row_plan = plan
            self._history = plan.history
        else:
            self._history = buffer[dropped:total].copy()
        return _rounded(values)

    def _rows(self, samples: np.ndarray, first_time: int, count: int, keep: bool = False):
        """``count`` outputs as rows of a matrix product; returns them (float64, exact
        sums), the input (history then ``samples``, zero-padded after) and, if ``keep``,
        the layout as a plan for the next chunk (None where the product took several)."""
        bank = self._bank
        assert bank is not None and bank.row_filters is not None  # the row layout
        row_filters = bank.row_filters
        history = self._history
        held, total = len(history), len(history) + len(samples)
        # Rows start at cycle position 0, ``position`` outputs before the first one owed;
        # those and the last row's outputs past ``count`` read zero padding and are dropped.
        position = bank.cycle_position_of_phase[first_time % bank.up]
        window_start = (first_time - position * bank.down) // bank.up - (bank.taps_per_phase - 1)
        rows = -(-(position + count) // bank.row_outputs)
        front = max(0, -window_start)  # zeros before the history, for a row that needs them
        end = window_start + (rows - 1) * bank.row_advance + bank.row_length
        work = np.zeros(front + max(total, end))
        work[front:front + held] = history
        work[front + held:front + total] = samples
        item = work.itemsize
        windows = np.ndarray(shape=(rows, bank.row_length), dtype=work.dtype, buffer=work,
                             offset=(front + window_start) * item,
                             strides=(bank.row_advance * item, item))
        # The overlapping windows are copied into plain matrices, which BLAS takes.
        if rows <= bank.max_rows:
            products = np.ascontiguousarray(windows) @ row_filters
            values = products.reshape(-1)[position:position + count]
            if not keep:
                return values, work[front:], None
            plan = _RowPlan(len(samples), first_time, 0, work, history,
                            slice(front + held, front + total), history, windows, row_filters,
                            products, values)  # (next_time, history and left: _filter's)
            return values, work[front:], plan
        products = np.empty((rows, bank.row_outputs))
        for first in range(0, rows, bank.max_rows):
            part = slice(first, first + bank.max_rows)
            np.matmul(np.ascontiguousarray(windows[part]), row_filters, out=products[part])
        return products.reshape(-1)[position:position + count], work[front:], None

    def _gathered(self, samples: np.ndarray, first_time: int, count: int):
        """``count`` outputs from gathered windows; returns them (float64, exact sums) and
        the input (history then ``samples``)."""
        bank = self._bank
        assert bank is not None and bank.cycle_filters is not None  # the gathered layout
        assert bank.cycle_input_advance is not None
        cycle_filters, cycle_input_advance = bank.cycle_filters, bank.cycle_input_advance
        taps, up, down = bank.taps_per_phase, bank.up, bank.down
        buffer = np.concatenate((self._history, samples))
        item = buffer.itemsize
        all_windows = np.ndarray(shape=(len(buffer) - taps + 1, taps), dtype=buffer.dtype,
                                 buffer=buffer, strides=(item, item))
        pieces = []
        time, remaining = first_time, count
        while remaining:
            size = min(remaining, bank.max_segment)
            position = bank.cycle_position_of_phase[time % up]
            advance = cycle_input_advance[position:position + size]
            first_window = time // up - (taps - 1) - int(advance[0])
            windows = all_windows[advance + first_window]
            filters = cycle_filters[position:position + size]
            pieces.append(np.einsum("ij,ij->i", windows, filters))
            time += size * down
            remaining -= size
        return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), buffer
