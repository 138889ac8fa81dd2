"""Online rational resampling from any stream rate to a model's rate (:class:`RationalResampler`, :func:`plan_rate`).

Part of :mod:`bci.preprocessing` (see its docstring for the order of the steps).

The resampler is a polyphase FIR with carried state: up by ``up``, low-pass, down by ``down``
(``up / down = sfreq_out / sfreq_in`` in lowest terms, e.g. 512 -> 1000 Hz is 125 / 64). Its
filter is :func:`scipy.signal.resample_poly`'s (a Kaiser-windowed sinc, ``half_width`` zero
crossings each side of the centre at the lower of the two rates), and its output is the
output of :func:`scipy.signal.resample_poly` on the whole signal: output sample ``k`` sits at
input fractional index ``k * sfreq_in / sfreq_out`` (the filter's delay is compensated by
emitting each output once its last input sample has arrived, not by shifting it).

Time base: output ``k`` gets the timestamp interpolated linearly between the input samples
``floor(f)`` and ``floor(f) + 1`` with ``f = k * down / up``.

Determinism: every output is a fixed sum over fixed input samples, one matrix product of the same
shape per output whatever the chunking, so the output (samples and timestamps) is bit-identical
for any chunking of the same input. Before the first sample the input is taken as constant at
the first sample's value (the FIR's steady state, like the IIR filters' start-up rule).

Non-finite input: a NaN/inf sample makes NaN every output whose filter support covers it
(about ``2 * half_width`` output-rate samples); the FIR forgets it after that by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import scipy.signal as ss

from bci.preprocessing.config import PreprocessConfig
from bci.preprocessing.filters import _check_sfreq, resample_factor
from streams._checks import check_float, check_int, check_type

__all__ = ["DEFAULT_HALF_WIDTH", "KAISER_BETA", "MAX_RATIO_TERM", "PASSBAND_FRACTION", "RatePlan",
           "RationalResampler", "plan_rate", "rational_ratio", "resample_taps"]

#: Zero crossings of the sinc on each side of the centre (scipy.signal.resample_poly's default).
DEFAULT_HALF_WIDTH = 10
#: Kaiser window beta of the filter (scipy.signal.resample_poly's default).
KAISER_BETA = 5.0
#: Largest ``up`` or ``down`` accepted (the polyphase table holds ``2 * half_width * max(up, down)`` taps).
MAX_RATIO_TERM = 10_000
#: A model's low-pass must lie at or below this fraction of the lower Nyquist frequency of the two rates:
#: the resampler's response is flat there (within 0.01 dB for the default filter; see docs/preprocessing.md).
PASSBAND_FRACTION = 0.8


def rational_ratio(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """``(up, down)`` in lowest terms with ``up / down == sfreq_out / sfreq_in``.

    Raises
    ------
    ValueError
        The ratio has no exact fraction with terms up to :data:`MAX_RATIO_TERM` (both rates named).
    """
    sfreq_in, sfreq_out = _check_sfreq(sfreq_in), _check_sfreq(sfreq_out)
    exact = Fraction(sfreq_out) / Fraction(sfreq_in)
    ratio = exact if max(exact.numerator, exact.denominator) <= MAX_RATIO_TERM else exact.limit_denominator(
        MAX_RATIO_TERM)
    if abs(float(ratio) - float(exact)) > 1e-12 * float(exact) or max(ratio.numerator,
                                                                       ratio.denominator) > MAX_RATIO_TERM:
        raise ValueError(
            f"cannot resample {sfreq_in:.10g} Hz to {sfreq_out:.10g} Hz: the ratio is not a fraction up/down with "
            f"terms up to {MAX_RATIO_TERM}; check the stream's nominal rate"
        )
    return ratio.numerator, ratio.denominator


def resample_taps(up: int, down: int, half_width: int = DEFAULT_HALF_WIDTH) -> np.ndarray:
    """The FIR (at ``up`` x the input rate, unit DC gain) that :func:`scipy.signal.resample_poly` would use.

    Passing it as ``window=`` to :func:`scipy.signal.resample_poly` (which multiplies it by ``up``)
    gives the offline reference of :class:`RationalResampler`.
    """
    up, down = check_int("up", up, low=1), check_int("down", down, low=1)
    half_width = check_int("half_width", half_width, low=1)
    max_rate = max(up, down)
    half_len = half_width * max_rate
    return ss.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", KAISER_BETA))


class RationalResampler:
    """Stateful resampling of a ``(n, n_channels)`` stream with its timestamps, chunk by chunk.

    Parameters
    ----------
    sfreq_in, sfreq_out : float
        Input and output rates in Hz (any pair whose ratio is a fraction with terms up to
        :data:`MAX_RATIO_TERM`).
    n_channels : int
        Columns of every chunk.
    half_width : int
        Zero crossings of the sinc on each side (accuracy against latency: see :attr:`latency`).

    Attributes
    ----------
    up, down : int
        The ratio in lowest terms.
    n_in, n_out : int
        Input samples consumed and output samples produced so far.
    latency : float
        Seconds between an output sample's time and the arrival of the last input sample it
        needs (``half_width / min(sfreq_in, sfreq_out)``, rounded up to an input sample).
    """

    def __init__(self, sfreq_in: float, sfreq_out: float, n_channels: int, *,
                 half_width: int = DEFAULT_HALF_WIDTH) -> None:
        self.sfreq_in, self.sfreq_out = _check_sfreq(sfreq_in), _check_sfreq(sfreq_out)
        self.n_channels = check_int("n_channels", n_channels, low=1)
        self.half_width = check_int("half_width", half_width, low=1)
        self.up, self.down = rational_ratio(self.sfreq_in, self.sfreq_out)
        taps = resample_taps(self.up, self.down, self.half_width) * self.up
        self._half_len = (len(taps) - 1) // 2
        self._n_taps = -(-len(taps) // self.up)  # input samples per output
        padded = np.zeros(self._n_taps * self.up)
        padded[: len(taps)] = taps
        # phase r, tap t multiplies input sample (i_hi - t): (up, n_taps)
        self._phases = np.ascontiguousarray(padded.reshape(self._n_taps, self.up).T)
        self._phases_rev = np.ascontiguousarray(self._phases[:, ::-1])
        self._tap_offsets = np.arange(self._n_taps)
        self.latency = math.ceil(self._half_len / self.up) / self.sfreq_in
        self.n_in = 0
        self.n_out = 0
        self._buf = np.zeros((0, self.n_channels))  # input samples from global index self._buf_start
        self._buf_start = 0
        self._tbuf = np.zeros(0)  # input timestamps from global index self._tbuf_start
        self._tbuf_start = 0

    def __repr__(self) -> str:
        return (f"RationalResampler({self.sfreq_in:g} Hz -> {self.sfreq_out:g} Hz, up={self.up}, "
                f"down={self.down}, n_channels={self.n_channels})")

    def n_available(self, n_in: int) -> int:
        """Outputs computable once ``n_in`` input samples have arrived."""
        top = n_in * self.up - 1 - self._half_len
        return top // self.down + 1 if top >= 0 else 0

    def process(self, chunk: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resample the next ``(n, n_channels)`` samples and their ``(n,)`` timestamps.

        Returns
        -------
        data : numpy.ndarray, shape (m, n_channels), float64
            The outputs that became computable (``m`` may be 0).
        times : numpy.ndarray, shape (m,), float64
            Their timestamps, interpolated from the input timestamps.
        """
        x, t = self._checked(chunk, times)
        n = len(x)
        if n == 0:
            return np.zeros((0, self.n_channels)), np.zeros(0)
        if self.n_in == 0:  # constant extension before the first sample
            self._buf = np.repeat(x[:1], self._n_taps, axis=0)
            self._buf_start = -self._n_taps
        self._buf = np.concatenate([self._buf, x])
        self._tbuf = np.concatenate([self._tbuf, t])
        self.n_in += n
        ks = np.arange(self.n_out, self.n_available(self.n_in), dtype=np.int64)
        out, out_t = self._outputs(ks)
        self.n_out += len(ks)
        self._trim()
        return out, out_t

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """End of a segment (a gap, the end of the data): the outputs still owed, then start afresh.

        Outputs whose position lies within the input received so far (up to the last input
        sample) are computed with the last sample held constant after it (the mirror of the
        start rule), so nothing received is lost; the resampler then forgets everything and the
        next :meth:`process` call starts a new segment from its first sample, as at the
        start of a stream. Deterministic: it depends on the samples, not on their chunking.

        Returns
        -------
        data, times : numpy.ndarray
            As :meth:`process` (``(m, n_channels)`` float64 and ``(m,)``).
        """
        out, out_t = np.zeros((0, self.n_channels)), np.zeros(0)
        if self.n_in:
            last = self.n_in - 1
            ks = np.arange(self.n_out, (last * self.up) // self.down + 1, dtype=np.int64)
            if len(ks):
                need = (int(ks[-1]) * self.down + self._half_len) // self.up  # newest input sample needed
                pad = need - (self._buf_start + len(self._buf) - 1)
                if pad > 0:
                    self._buf = np.concatenate([self._buf, np.repeat(self._buf[-1:], pad, axis=0)])
                out, out_t = self._outputs(ks)
        self.n_in = self.n_out = 0
        self._buf, self._buf_start = np.zeros((0, self.n_channels)), 0
        self._tbuf, self._tbuf_start = np.zeros(0), 0
        return out, out_t

    # ------------------------------------------------------------------ internals
    def _checked(self, chunk: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(chunk)
        if x.dtype.kind not in "fiu":
            raise TypeError(f"chunk has dtype {x.dtype}; expected real-valued samples")
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise ValueError(f"chunk of shape {x.shape} must be (n_samples, n_channels={self.n_channels}), "
                             "time-major")
        t = np.asarray(times, dtype=np.float64)
        if t.shape != (len(x),):
            raise ValueError(f"times of shape {t.shape} must be ({len(x)},): one timestamp per sample")
        return x.astype(np.float64, copy=False), t

    def _outputs(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples and timestamps of outputs ``ks`` (all computable from the buffers)."""
        if not len(ks):
            return np.zeros((0, self.n_channels)), np.zeros(0)
        m = ks * self.down + self._half_len
        rows = m // self.up - self._buf_start
        coef = self._phases_rev[m % self.up]  # (n_out, n_taps), oldest input first
        # (n_out, n_taps, n_channels): the input samples each output needs, oldest first
        support = self._buf[(rows - (self._n_taps - 1))[:, None] + self._tap_offsets[None, :]]
        # one (1, n_taps) @ (n_taps, n_channels) product per output, of the same shape whatever the
        # chunking, so every output is summed in the same order (bit-identical for any chunking)
        out = np.matmul(coef[:, None, :], support)[:, 0, :]
        pos = ks * self.down
        left = pos // self.up - self._tbuf_start
        frac = (pos % self.up) / self.up
        t0 = self._tbuf[left]
        t1 = self._tbuf[np.minimum(left + 1, len(self._tbuf) - 1)]
        return out, t0 + frac * (t1 - t0)

    def _trim(self) -> None:
        """Keep only what the next outputs need."""
        m = self.n_out * self.down + self._half_len
        keep_from = m // self.up - (self._n_taps - 1)
        cut = max(0, keep_from - self._buf_start)
        if cut:
            self._buf = self._buf[cut:]
            self._buf_start += cut
        tcut = max(0, (self.n_out * self.down) // self.up - self._tbuf_start)
        if tcut:
            self._tbuf = self._tbuf[tcut:]
            self._tbuf_start += tcut


# --------------------------------------------------------------------------- serving a model
@dataclass(frozen=True)
class RatePlan:
    """How a stream at one rate feeds a model at another.

    Attributes
    ----------
    resample : bool
        True when a :class:`RationalResampler` runs first (``stream_sfreq -> model_sfreq``); False
        on the integer path (the stream's rate is the model's or an integer multiple that the
        preprocessing decimates, exactly as before resampling existed).
    stream_sfreq : float
        Rate of the incoming stream.
    preprocess : PreprocessConfig or None
        What the :class:`~bci.preprocessing.OnlinePreprocessor` runs (``resample_to`` cleared when
        resampling: the filters run at the model's rate).
    preprocess_sfreq : float
        Input rate of that preprocessing (the model's rate when resampling).
    """

    resample: bool
    stream_sfreq: float
    preprocess: PreprocessConfig | None
    preprocess_sfreq: float

    def resampler(self, n_channels: int) -> RationalResampler | None:
        """A fresh resampler for this plan (None on the integer path)."""
        return RationalResampler(self.stream_sfreq, self.preprocess_sfreq, n_channels) if self.resample else None


def _integer_rate(sfreq: float, preprocess: PreprocessConfig | None) -> float | None:
    """The rate the preprocessing gives without a resampler (None: not an integer factor)."""
    if preprocess is None:
        return sfreq
    try:
        return sfreq / resample_factor(sfreq, preprocess.resample_to)
    except ValueError:
        return None


def plan_rate(stream_sfreq: float, model_sfreq: float | None, preprocess: PreprocessConfig | None, *,
              model_name: str = "the model") -> RatePlan:
    """Decide how a stream at ``stream_sfreq`` is served to a model at ``model_sfreq``.

    The integer path (stream rate = model rate, or an integer multiple decimated by
    ``preprocess.resample_to``) is kept as it is. Any other rate is resampled to the model's rate
    before the preprocessing, so the band-pass and notches run at the rate the model was trained at.

    Parameters
    ----------
    stream_sfreq : float
        Nominal rate of the stream.
    model_sfreq : float or None
        Rate of the model's windows (None: no model rate to meet, e.g. the epoch builder's tap).
    preprocess : PreprocessConfig or None
        The model's preprocessing.
    model_name : str
        For messages.

    Raises
    ------
    ValueError
        The stream cannot carry the band the model uses: its Nyquist frequency times
        :data:`PASSBAND_FRACTION` is below the model's low-pass ``h_freq``, or (for a model without a
        low-pass, which uses everything up to its own Nyquist) the stream is slower than the model.
        The message names both rates and the model's low-pass.
    """
    stream_sfreq = _check_sfreq(stream_sfreq)
    if preprocess is not None:
        check_type("preprocess", preprocess, PreprocessConfig)
    integer = _integer_rate(stream_sfreq, preprocess)
    resample_to = None if preprocess is None else preprocess.resample_to
    if model_sfreq is None or (integer is not None and math.isclose(integer, model_sfreq, rel_tol=1e-6)) or (
            resample_to is not None and not math.isclose(resample_to, model_sfreq, rel_tol=1e-6)):
        # nothing to meet, already served, or a checkpoint whose own rates disagree (check_stream names it)
        return RatePlan(False, stream_sfreq, preprocess, stream_sfreq)
    model_sfreq = check_float("model sfreq", model_sfreq, positive=True)
    _check_servable(stream_sfreq, model_sfreq, preprocess, model_name)
    rational_ratio(stream_sfreq, model_sfreq)  # raises if no exact ratio
    pre = None if preprocess is None else replace(preprocess, resample_to=None)
    return RatePlan(True, stream_sfreq, pre, model_sfreq)


def _check_servable(stream_sfreq: float, model_sfreq: float, preprocess: PreprocessConfig | None,
                    model_name: str) -> None:
    h_freq = None if preprocess is None else preprocess.h_freq
    if h_freq is None:
        if stream_sfreq < model_sfreq:
            raise ValueError(
                f"a {stream_sfreq:g} Hz stream cannot serve {model_name} at {model_sfreq:g} Hz: the model has no "
                f"low-pass (h_freq=None), so it uses content up to its Nyquist {model_sfreq / 2:g} Hz, above the "
                f"stream's Nyquist {stream_sfreq / 2:g} Hz; record at >= {model_sfreq:g} Hz or use a model "
                f"trained with a low-pass of at most {PASSBAND_FRACTION * stream_sfreq / 2:g} Hz"
            )
        return
    limit = PASSBAND_FRACTION * min(stream_sfreq, model_sfreq) / 2.0
    if h_freq > limit:
        need = h_freq / PASSBAND_FRACTION * 2.0
        raise ValueError(
            f"a {stream_sfreq:g} Hz stream cannot serve {model_name} at {model_sfreq:g} Hz: the model's low-pass "
            f"h_freq={h_freq:g} Hz is above {PASSBAND_FRACTION:g} x the Nyquist frequency of the slower rate "
            f"({limit:g} Hz), where the resampler is no longer flat; record at >= {need:g} Hz"
        )
