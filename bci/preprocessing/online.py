"""The online preprocessor (:class:`OnlinePreprocessor`), its offline path (:func:`preprocess_recording`) and
its speed measurement. Part of :mod:`bci.preprocessing` (see its docstring for the order of the steps).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import scipy.signal as ss

from bci.preprocessing.config import PreprocessConfig
from bci.preprocessing.filters import _KERNEL, _check_sfreq, _finite_runs, design_sos, resample_factor
from bci.preprocessing.resample import plan_rate
from bci.preprocessing.scaler import _window_copy
from streams._checks import check_int

__all__ = ["OnlinePreprocessor", "measure_speed", "preprocess_recording"]

# --------------------------------------------------------------------------- online preprocessor
class OnlinePreprocessor:
    """Stateful causal preprocessing of a continuous multichannel stream, chunk by chunk.

    Parameters
    ----------
    config : PreprocessConfig
        What to do.
    sfreq : float
        Input sampling rate in Hz.
    ch_names : list of str
        Input channel names (distinct), in column order.

    Attributes
    ----------
    out_sfreq : float
        Output rate (``sfreq`` unless resampling).
    decim : int
        Decimation factor (1 without resampling).
    n_samples_in : int
        Input samples consumed so far (sets the decimation phase).

    Notes
    -----
    Output is bit-identical for any chunking of the same input: the filter state
    (float64), the start-up rule and the decimation phase are carried sample-exactly.

    Raises
    ------
    ValueError
        Edges or notches not below the Nyquist frequency, non-integer resampling
        factor, unknown reference channel (named, with some available ones).
    """

    def __init__(self, config: PreprocessConfig, sfreq: float, ch_names: Sequence[str]) -> None:
        if not isinstance(config, PreprocessConfig):
            raise TypeError(f"config must be a PreprocessConfig, got {type(config).__name__}")
        self.config = config
        self.sfreq = _check_sfreq(sfreq)
        self.ch_names = self._checked_names(ch_names)
        self.n_channels = len(self.ch_names)
        self.decim = resample_factor(self.sfreq, config.resample_to)
        self.out_sfreq = self.sfreq / self.decim
        self._ref_index = self._reference_index(config.reference)
        self._sos = design_sos(config, self.sfreq)
        n_sections = self._sos.shape[0]
        # steady-state response of the cascade to a unit step, per section: (n_sections, 2)
        self._zi_unit = ss.sosfilt_zi(self._sos) if n_sections else np.zeros((0, 2))
        self._zi = np.zeros((self.n_channels, n_sections, 2))  # channel-major for the kernel
        self._needs_init = np.ones(self.n_channels, dtype=bool)
        self._any_needs_init = True
        self.n_samples_in = 0

    # ------------------------------------------------------------------ validation helpers
    @staticmethod
    def _checked_names(ch_names: Sequence[str]) -> list[str]:
        if isinstance(ch_names, str) or not isinstance(ch_names, Sequence):
            raise TypeError(f"ch_names must be a list of channel names, got {type(ch_names).__name__}")
        names = list(ch_names)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"ch_names={names[:5]!r}... must be a non-empty list of strings")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"ch_names has duplicate channel name(s) {dup[:5]}; names must be distinct")
        return names

    def _reference_index(self, reference: str | tuple[str, ...]) -> np.ndarray | None:
        """Column indices whose mean is subtracted (None: no re-reference)."""
        if reference == "none":
            return None
        if reference == "average":
            return np.arange(self.n_channels)
        missing = [name for name in reference if name not in self.ch_names]
        if missing:
            raise ValueError(
                f"reference={reference!r}: channel(s) {missing} not in the stream; "
                f"available channels include {self.ch_names[:8]} ({self.n_channels} in all)"
            )
        return np.array([self.ch_names.index(name) for name in reference])

    # ------------------------------------------------------------------ public
    @property
    def sos(self) -> np.ndarray:
        """Copy of the causal SOS cascade, shape (n_sections, 6), at the input rate."""
        return self._sos.copy()

    def frequency_response(self, freqs: np.ndarray | Sequence[float]) -> np.ndarray:
        """Complex response of the filter cascade at ``freqs`` (Hz, input rate)."""
        freqs = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
        if not len(self._sos):
            return np.ones(freqs.shape, dtype=complex)
        _, h = ss.sosfreqz(self._sos, worN=freqs, fs=self.sfreq)
        return h

    def reset(self) -> None:
        """Forget the filter state (e.g. after a gap in the stream).

        The next finite sample of each channel restarts its filter in the steady
        state for a constant input equal to that sample (``sosfilt_zi * x0``) rather
        than from zero: with a high-pass and a DC offset of millivolts, a zero state
        would ring for seconds. The decimation phase is kept (it counts input samples
        since the first one, which is how the caller maps outputs to timestamps).
        """
        self._zi[...] = 0.0
        self._needs_init[:] = True
        self._any_needs_init = True

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Preprocess the next ``(n, n_channels)`` samples of the stream.

        Parameters
        ----------
        chunk : numpy.ndarray, shape (n, n_channels)
            Real-valued samples, time-major (float32 expected; any real dtype accepted).

        Returns
        -------
        numpy.ndarray, shape (m, n_channels), float32, C-contiguous
            ``m = n`` without resampling; otherwise the samples whose global input
            index ``i`` satisfies ``(i + 1) % decim == 0``.
        """
        x = self._checked_chunk(chunk)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, self.n_channels), dtype=np.float32)
        finite = bool(np.isfinite(x).all())
        self._rereference(x, finite)
        xt = np.ascontiguousarray(x.T)  # (n_channels, n) for the kernel, filtered in place
        if finite:
            self._filter_finite(xt)
        else:
            self._filter_with_gaps(xt)
        first = (self.decim - 1 - self.n_samples_in) % self.decim
        self.n_samples_in += n
        kept = xt[:, first :: self.decim] if self.decim > 1 else xt
        return np.ascontiguousarray(kept.T, dtype=np.float32)

    def apply_window(self, window: np.ndarray) -> np.ndarray:
        """Per-window steps on ``(n_channels, n_times)`` (or a batch ``(n, n_channels, n_times)``).

        Subtracts each channel's mean over the configured baseline interval (nothing
        when ``config.baseline`` is None). Returns float32; the input is not modified.
        """
        out = _window_copy(window, self.n_channels)
        if self.config.baseline is None:
            return out
        start, stop = self._baseline_slice(out.shape[-1])
        out -= out[..., start:stop].mean(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
        return out

    # ------------------------------------------------------------------ internals
    def _checked_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Float64 copy of a valid chunk."""
        if not isinstance(chunk, np.ndarray):
            chunk = np.asarray(chunk)
        if chunk.dtype.kind not in "fiu":
            raise TypeError(f"chunk has dtype {chunk.dtype}; expected real-valued samples (float32)")
        if chunk.ndim != 2 or chunk.shape[1] != self.n_channels:
            raise ValueError(
                f"chunk of shape {chunk.shape} must be (n_samples, n_channels={self.n_channels}), time-major"
            )
        return np.array(chunk, dtype=np.float64, copy=True)

    def _rereference(self, x: np.ndarray, finite: bool) -> None:
        """Subtract the reference in place (time-major; the mean of each row of reference channels)."""
        if self._ref_index is None:
            return
        ref_data = x if len(self._ref_index) == self.n_channels else x[:, self._ref_index]
        ref = np.add.reduce(ref_data, axis=1, keepdims=True)  # = mean, without np.mean's Python overhead
        ref /= ref_data.shape[1]
        if not finite:
            self._finite_reference(ref_data, ref)
        x -= ref

    @staticmethod
    def _finite_reference(ref_data: np.ndarray, ref: np.ndarray) -> None:
        """Rows with non-finite reference values: mean of the finite ones (NaN if none)."""
        ok = np.isfinite(ref_data)
        bad_rows = np.flatnonzero(~ok.all(axis=1))
        sub, sub_ok = ref_data[bad_rows], ok[bad_rows]
        count = sub_ok.sum(axis=1)
        total = np.where(sub_ok, sub, 0.0).sum(axis=1)
        ref[bad_rows, 0] = np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def _init_state(self, channels: np.ndarray | slice, first: np.ndarray) -> None:
        """Steady state for a constant input equal to ``first`` on ``channels``."""
        self._zi[channels] = first[:, None, None] * self._zi_unit[None, :, :]

    def _filter_finite(self, xt: np.ndarray) -> None:
        """All samples finite: one vectorised kernel call over every channel."""
        if self._any_needs_init:
            idx = np.flatnonzero(self._needs_init)
            self._init_state(idx, xt[idx, 0])
            self._needs_init[:] = False
            self._any_needs_init = False
        if len(self._sos):
            _KERNEL(self._sos, xt, self._zi)

    def _filter_with_gaps(self, xt: np.ndarray) -> None:
        """Some samples non-finite: clean channels vectorised, the others run by run."""
        ok = np.isfinite(xt)
        clean = ok.all(axis=1)
        if clean.any():
            idx = np.flatnonzero(clean)
            sub, zi = np.ascontiguousarray(xt[idx]), np.ascontiguousarray(self._zi[idx])
            init = idx[self._needs_init[idx]]
            if len(init):
                pos = np.searchsorted(idx, init)
                zi[pos] = sub[pos, 0][:, None, None] * self._zi_unit[None, :, :]
                self._needs_init[init] = False
            if len(self._sos):
                _KERNEL(self._sos, sub, zi)
            xt[idx], self._zi[idx] = sub, zi
        for c in np.flatnonzero(~clean):
            self._filter_channel_runs(xt, int(c), ok[c])
        self._any_needs_init = bool(self._needs_init.any())

    def _filter_channel_runs(self, xt: np.ndarray, c: int, ok: np.ndarray) -> None:
        """Filter one channel's finite runs; its non-finite samples become NaN and re-arm the state."""
        row = xt[c]
        for start, stop in _finite_runs(ok):
            if self._needs_init[c] or start > 0:  # start > 0: a non-finite sample just before
                self._init_state(slice(c, c + 1), row[start : start + 1])
            seg = np.ascontiguousarray(row[start:stop][None, :])
            zi = np.ascontiguousarray(self._zi[c : c + 1])
            if len(self._sos):
                _KERNEL(self._sos, seg, zi)
            row[start:stop], self._zi[c : c + 1] = seg[0], zi
        row[~ok] = np.nan
        self._needs_init[c] = not ok[-1]

    def _baseline_slice(self, n_times: int) -> tuple[int, int]:
        """Sample range of the configured baseline interval in a window of ``n_times`` output samples."""
        b0, b1 = self.config.baseline or (0.0, 0.0)
        start = int(round(b0 * self.out_sfreq))
        stop = int(round(b1 * self.out_sfreq))
        if stop <= start or stop > n_times:
            raise ValueError(
                f"baseline={self.config.baseline!r} s covers samples [{start}, {stop}) at {self.out_sfreq:g} Hz, "
                f"which is empty or outside a window of {n_times} samples; shorten the baseline"
            )
        return start, stop


# --------------------------------------------------------------------------- offline path
def preprocess_recording(
    data: np.ndarray,
    sfreq: float,
    ch_names: Sequence[str],
    config: PreprocessConfig,
    chunk_size: int = 1000,
    *,
    model_sfreq: float | None = None,
) -> np.ndarray:
    """Preprocess a whole recording with the same :class:`OnlinePreprocessor` (and resampler) as live use.

    Parameters
    ----------
    data : numpy.ndarray, shape (n_samples, n_channels)
        Time-major samples.
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str
        Channel names, in column order.
    config : PreprocessConfig
        The preprocessing.
    chunk_size : int
        Samples per call to :meth:`OnlinePreprocessor.process` (memory only: the
        output does not depend on it).
    model_sfreq : float, optional
        Rate the output must have (a model's ``sfreq``). When ``sfreq`` is neither it nor an integer
        multiple decimated by ``config.resample_to``, the recording is first resampled to it with the
        runtime's :class:`~bci.preprocessing.RationalResampler` (:func:`~bci.preprocessing.plan_rate`,
        the same rule as :class:`bci.runtime.pipeline.Pipeline`); output ``k`` then sits at input
        index ``k * sfreq / model_sfreq``.

    Returns
    -------
    numpy.ndarray, shape (m, n_channels), float32
        Bit-identical to feeding ``data`` to a fresh preprocessor in any chunking.
    """
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    plan = plan_rate(sfreq, model_sfreq, config)
    pre = OnlinePreprocessor(plan.preprocess, plan.preprocess_sfreq, ch_names)
    resampler = plan.resampler(pre.n_channels)
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != pre.n_channels:
        raise ValueError(
            f"data of shape {data.shape} must be (n_samples, n_channels={pre.n_channels}), time-major"
        )

    def step(chunk: np.ndarray) -> np.ndarray:
        if resampler is not None:  # as Pipeline.push_data: resampled, then float32 into the filters
            chunk = resampler.process(chunk, np.zeros(len(chunk)))[0].astype(np.float32)
        return pre.process(chunk)

    parts = [step(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]
    if not parts:
        return np.zeros((0, pre.n_channels), dtype=np.float32)
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- speed
def measure_speed(
    chunk_sizes: Sequence[int] = (1, 10, 1000),
    *,
    n_channels: int = 128,
    sfreq: float = 1000.0,
    seconds: float = 20.0,
    config: PreprocessConfig | None = None,
    seed: int = 0,
) -> dict[int, float]:
    """Throughput of :meth:`OnlinePreprocessor.process`, in multiples of real time.

    Feeds ``seconds`` of random data per chunk size (default preprocessing: 0.5-40 Hz
    band-pass order 4, 50 Hz notch, average reference).

    Returns
    -------
    dict
        ``{chunk_size: x_real_time}``.
    """
    config = config or PreprocessConfig()
    names = [f"EEG{i:03d}" for i in range(n_channels)]
    n = int(seconds * sfreq)
    data = (np.random.default_rng(seed).standard_normal((n, n_channels)) * 1e-5).astype(np.float32)
    result = {}
    for size in chunk_sizes:
        pre = OnlinePreprocessor(config, sfreq, names)
        chunks = [data[i : i + size] for i in range(0, n, size)]
        t0 = time.perf_counter()
        for chunk in chunks:
            pre.process(chunk)
        result[int(size)] = seconds / (time.perf_counter() - t0)
    return result
