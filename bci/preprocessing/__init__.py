"""Online preprocessing: causal filters with carried state, re-reference, decimation, scaling.

Modules: :mod:`~bci.preprocessing.config` (:class:`PreprocessConfig`), :mod:`~bci.preprocessing.filters`
(filter design, the decimation factor, the filtering kernel), :mod:`~bci.preprocessing.resample`
(:class:`RationalResampler`, :func:`plan_rate`), :mod:`~bci.preprocessing.online`
(:class:`OnlinePreprocessor`, :func:`preprocess_recording`) and :mod:`~bci.preprocessing.scaler`
(:class:`ChannelScaler`, the flat-channel rule). The names below are importable from the package.

One code path serves training and live use. :class:`OnlinePreprocessor` consumes a
continuous ``(n_samples, n_channels)`` stream chunk by chunk and keeps all state
(filter delays, decimation phase) between calls, so the output never depends on how
the stream was cut into chunks: :func:`preprocess_recording` (the offline path) runs
the very same object over a whole recording and gives bit-identical samples.

A stream at a rate the model was not trained at (neither its rate nor an integer multiple that
``resample_to`` decimates) is first resampled to the model's rate by
:class:`~bci.preprocessing.resample.RationalResampler` (:func:`plan_rate` decides; the steps below
then run at the model's rate). Per chunk, in this fixed order:

1. re-reference (in float64, before filtering): subtract the mean of all channels
   (``"average"``), of the named channels, or nothing (``"none"``);
2. one causal IIR cascade (second-order sections, float64 state): Butterworth
   band-/high-/low-pass designed with :func:`mne.filter.create_filter`, line-noise
   notches (:func:`scipy.signal.iirnotch`) and, when resampling, an anti-alias
   Chebyshev type I low-pass (the design of :func:`scipy.signal.decimate`);
3. decimation by an integer factor, keeping the last sample of each group of
   ``factor`` input samples (counted from the first sample ever processed);
4. output as float32, time-major.

Per window (:meth:`OnlinePreprocessor.apply_window`): baseline correction. The
per-channel standardisation (:class:`ChannelScaler`) is fitted on training windows,
stored in the model checkpoint and applied on the inference side.

Non-finite input: a NaN/inf sample of a channel comes out as NaN at its own output
position and re-arms that channel's filter, which restarts at the next finite sample
exactly as at the start of a stream (see :meth:`OnlinePreprocessor.reset`). The other
channels are not affected: the average reference of such a sample is the mean of the
channels that are finite at that sample.
"""

from __future__ import annotations

from bci.preprocessing.config import (ANTIALIAS_EDGE, ANTIALIAS_ORDER, ANTIALIAS_RIPPLE_DB, DEFAULT_NOTCH_Q,
                                      MAX_FILTER_ORDER, PreprocessConfig)
from bci.preprocessing.filters import design_sos, resample_factor
from bci.preprocessing.online import OnlinePreprocessor, measure_speed, preprocess_recording
from bci.preprocessing.resample import (DEFAULT_HALF_WIDTH, PASSBAND_FRACTION, RatePlan, RationalResampler,
                                        plan_rate, rational_ratio, resample_taps)
from bci.preprocessing.scaler import FLAT_STD_FRACTION, ChannelScaler, flat_channels

__all__ = [
    "ANTIALIAS_EDGE",
    "ANTIALIAS_ORDER",
    "ANTIALIAS_RIPPLE_DB",
    "DEFAULT_HALF_WIDTH",
    "DEFAULT_NOTCH_Q",
    "FLAT_STD_FRACTION",
    "MAX_FILTER_ORDER",
    "PASSBAND_FRACTION",
    "ChannelScaler",
    "OnlinePreprocessor",
    "PreprocessConfig",
    "RatePlan",
    "RationalResampler",
    "design_sos",
    "flat_channels",
    "measure_speed",
    "plan_rate",
    "preprocess_recording",
    "rational_ratio",
    "resample_factor",
    "resample_taps",
]
