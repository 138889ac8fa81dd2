"""What the epoch builders of :mod:`offline.data.build` take: windowing, labelling, simulation.

Each dataclass owns the defaults of what it configures and checks its values when it is made
(:mod:`streams._checks`: a wrong type raises :class:`TypeError`, a wrong value :class:`ValueError`):

* :class:`WindowOptions`: how a session becomes windows (preprocessing, a model to match,
  window offset and length, which markers open windows, which streams are read), used by
  :func:`~offline.data.build.epochs_from_sessions` and :func:`~offline.data.build.epochs_from_simulation`;
* :class:`LabelOptions`: how windows get classes, subjects and blocks (stimulus set, class list,
  image map, subject id, block gap), used by :func:`~offline.data.build.epochs_from_sessions`;
* :class:`SimulationOptions`: the simulated experiment of
  :func:`~offline.data.build.epochs_from_simulation` (stimuli, schedule, SNR, seed, session).

``bci epochs`` and ``bci dataset simulate`` read their flag defaults from these classes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bci.preprocessing import PreprocessConfig
from bci.preprocessing.channel_map import ChannelMapOptions
from streams._checks import check_bool, check_float, check_int, check_type, check_value
from streams.synthetic import StimulusSet

__all__ = ["LabelOptions", "SimulationOptions", "WindowOptions", "preprocess_config"]

#: Window length (samples at the output rate) and offset (seconds) when neither the options nor a model say.
DEFAULT_N_TIMES = {"eeg": 440, "fmri": 1}
DEFAULT_OFFSET = {"eeg": 0.020, "fmri": 4.0}

_PATH = (str, os.PathLike)


def preprocess_config(preprocessing: PreprocessConfig | Mapping[str, Any] | str | None) -> PreprocessConfig | None:
    """The :class:`PreprocessConfig` that ``preprocessing`` names (``'default'``, a dict, a config or None)."""
    if preprocessing is None or isinstance(preprocessing, PreprocessConfig):
        return preprocessing
    if isinstance(preprocessing, str):
        if preprocessing != "default":
            raise ValueError(f"preprocessing={preprocessing!r}: pass 'default', a PreprocessConfig, a dict or None")
        return PreprocessConfig()
    if isinstance(preprocessing, Mapping):
        return PreprocessConfig.from_dict(preprocessing)
    raise TypeError(f"preprocessing must be a PreprocessConfig, dict, 'default' or None, got "
                    f"{type(preprocessing).__name__}")


def _optional(name: str, value: Any, types: type | tuple[type, ...], what: str) -> None:
    if value is not None:
        check_type(name, value, types, what)


@dataclass(frozen=True)
class WindowOptions:
    """How a session is cut into windows, exactly as the runtime cuts them live.

    Attributes
    ----------
    preprocessing : PreprocessConfig, dict, 'default' or None
        Online preprocessing applied before windowing (``'default'``: ``PreprocessConfig()``,
        0.5-40 Hz + 50 Hz notch + average reference; None: raw).
    model : path, optional
        A checkpoint directory: its preprocessing and ``n_times`` are used (and its rate and
        channel names checked), so the epochs are what the model sees live.
    offset : float, optional
        Seconds from marker to window start (None: 0.020 for EEG, 4.0 for fMRI).
    n_times : int, optional
        Samples per window at the output rate (None: 440 for EEG, 1 for fMRI, or the model's).
    marker_filter : str or None
        Regular expression; only matching markers open windows (``''`` or None: every marker).
    data_stream, marker_stream : str, optional
        Stream selection (key, name or ``type=EEG``); None: the first EEG/fMRI stream and the
        first marker stream.
    channels : ChannelMapOptions, optional
        Map the sessions' channels onto the ``model``'s as ``bci live`` does (needs ``model``);
        None: match by name only.
    skip_damaged : bool
        Cut around damaged chunks of a session (``bci info --verify`` lists them): each is a gap, no
        window spans it and its markers are dropped with the reason. False: stop with
        :class:`~streams.errors.DamagedChunkError`.
    """

    preprocessing: PreprocessConfig | Mapping[str, Any] | str | None = "default"
    model: str | os.PathLike | None = None
    offset: float | None = None
    n_times: int | None = None
    marker_filter: str | None = "^stim/"
    data_stream: str | None = None
    marker_stream: str | None = None
    channels: ChannelMapOptions | None = None
    skip_damaged: bool = False

    def __post_init__(self) -> None:
        check_bool("skip_damaged", self.skip_damaged)
        preprocess_config(self.preprocessing)
        _optional("channels", self.channels, ChannelMapOptions, "ChannelMapOptions or None")
        if self.channels is not None and self.channels.given and self.model is None:
            raise ValueError("a channel map (--channel-map/--stream-montage) maps onto a model's channels: "
                             "pass the model too (--model DIR)")
        _optional("model", self.model, _PATH, "a checkpoint directory (str or os.PathLike)")
        if self.offset is not None:
            check_float("offset", self.offset)
        if self.n_times is not None:
            check_int("n_times", self.n_times, low=1)
        _optional("marker_filter", self.marker_filter, str, "a regular expression (str) or None")
        self.compiled_filter()
        _optional("data_stream", self.data_stream, str, "a stream key, name or 'type=...' (str) or None")
        _optional("marker_stream", self.marker_stream, str, "a stream key, name or 'type=...' (str) or None")

    def preprocess_config(self) -> PreprocessConfig | None:
        """The preprocessing as a :class:`PreprocessConfig` (None: raw)."""
        return preprocess_config(self.preprocessing)

    def compiled_filter(self) -> re.Pattern[str] | None:
        """The marker filter compiled (None when every marker opens a window)."""
        if not self.marker_filter:
            return None
        try:
            return re.compile(self.marker_filter)
        except re.error as exc:
            raise ValueError(f"marker_filter={self.marker_filter!r} is not a valid regular expression: {exc}") from None


@dataclass(frozen=True)
class LabelOptions:
    """How windows get their class, subject and block.

    Attributes
    ----------
    stimuli : StimulusSet, 'auto' or None
        Image ids to classes, and the image table (images, captions, template captions).
        ``'auto'``: rebuilt from a simulated session's attributes when they match its markers.
    class_names : sequence of str, optional
        Class list; the marker labels are looked up in it (None: the sorted labels found).
    image_map : dict, optional
        Image id to class name or index, for markers without labels.
    subject : str or int, optional
        Subject id of all sessions (None: the session attribute ``subject``, else ``subject-0``).
    block_gap : float, optional
        Without ``block_start`` markers, a gap between stimulus markers longer than this many
        seconds starts a new block (None: 2.5 x the median gap).
    """

    stimuli: StimulusSet | str | None = "auto"
    class_names: Sequence[str] | None = None
    image_map: Mapping[str, str | int] | None = None
    subject: str | int | None = None
    block_gap: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stimuli, str):
            if self.stimuli != "auto":
                raise ValueError(f"stimuli={self.stimuli!r}: pass a StimulusSet, 'auto' or None")
        elif self.stimuli is not None and not isinstance(self.stimuli, StimulusSet):
            raise TypeError(f"stimuli must be a StimulusSet, 'auto' or None, got {type(self.stimuli).__name__}")
        if isinstance(self.class_names, str):
            raise TypeError(f"class_names={self.class_names!r} must be a sequence of class names, not one str")
        _optional("class_names", self.class_names, Sequence, "a sequence of str or None")
        _optional("image_map", self.image_map, Mapping, "a mapping of image id to class name or index, or None")
        if isinstance(self.subject, bool):
            raise TypeError(f"subject={self.subject!r} must be a str or int, not bool")
        _optional("subject", self.subject, (str, int), "a str or int, or None")
        if self.block_gap is not None:
            check_float("block_gap", self.block_gap, positive=True)


@dataclass(frozen=True)
class SimulationOptions:
    """The simulated experiment of :func:`~offline.data.build.epochs_from_simulation`.

    Attributes
    ----------
    n_per_class : int
        Trials per class.
    n_blocks : int
        Blocks per class, 1..``n_per_class`` (block design: ``n_classes * n_blocks`` single-class blocks;
        rapid design: ``n_blocks`` blocks showing every class).
    snr : float
        Evoked-response SNR of the simulator (docs/synthetic-world.md), >= 0.
    seed : int
        Seeds the stimuli, the schedule, the simulator and the splits.
    n_classes : int
        Classes used (1..40), spread over the shapes and colours.
    n_images_per_class : int
        Distinct images per class in the stimulus set.
    design : {'block', 'rapid'}
    image_size : int
        Stimulus image side in pixels.
    session : int
        Recording session of the simulated subject ``seed``: new noise and schedule, same
        forward model and stimuli (``bci simulate --seed S --session N`` streams the same
        subject live).
    """

    n_per_class: int = 10
    n_blocks: int = 2
    snr: float = 1.0
    seed: int = 0
    n_classes: int = 40
    n_images_per_class: int = 5
    design: str = "block"
    image_size: int = 64
    session: int = 0

    def __post_init__(self) -> None:
        check_int("n_per_class", self.n_per_class)  # ranges: checked by the schedule builder, their owner
        check_int("n_blocks", self.n_blocks)
        check_float("snr", self.snr, low=0)
        check_int("seed", self.seed)
        check_int("n_classes", self.n_classes, low=1, high=40)
        check_int("n_images_per_class", self.n_images_per_class, low=1)
        check_value("design", self.design, ("block", "rapid"))
        check_int("image_size", self.image_size, low=1)
        check_int("session", self.session, low=0)
