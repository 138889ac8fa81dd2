"""StreamDescription: validation, dict and LSL round trips, reconnect comparison."""

from __future__ import annotations

import pytest

from streams.description import StreamDescription
from streams.errors import StreamMismatchError


def _eeg(n: int = 4, rate: float = 1000.0, **kw) -> StreamDescription:
    return StreamDescription("EEG", "EEG", "amp1", tuple(f"C{i}" for i in range(n)), nominal_rate=rate, **kw)


def test_defaults_filled_per_stream_type() -> None:
    d = _eeg()
    assert d.channel_types == ("eeg",) * 4
    assert d.channel_units == ("V",) * 4
    m = StreamDescription("M", "Markers", "m", ("marker",), dtype="string")
    assert m.channel_types == ("marker",) and not m.is_regular and m.is_string


def test_dict_round_trip() -> None:
    d = _eeg(channel_units=("uV",) * 4, hostname="lab-pc")
    back = StreamDescription.from_dict(d.to_dict())
    assert back == d and back.hostname == "lab-pc"


def test_from_dict_names_missing_keys() -> None:
    data = _eeg().to_dict()
    del data["channel_names"]
    with pytest.raises(ValueError, match="channel_names"):
        StreamDescription.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channel_names": ()}, "no channels"),
        ({"channel_names": ("A", "A")}, "duplicated channel names"),
        ({"channel_names": ("A", "B"), "channel_types": ("eeg",)}, "channel_types has 1 entries"),
        ({"channel_names": ("A",), "nominal_rate": -1.0}, "nominal_rate=-1.0"),
        ({"channel_names": ("A",), "dtype": "complex"}, "dtype='complex'"),
    ],
)
def test_invalid_descriptions_are_clear(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StreamDescription("S", "EEG", "s", **kwargs)


def test_lsl_info_round_trip_keeps_channel_xml() -> None:
    d = _eeg(8, 512.0, channel_units=("uV",) * 8)
    back = StreamDescription.from_lsl_info(d.to_lsl_info())
    assert back == d
    assert back.channel_names == d.channel_names and back.channel_units == ("uV",) * 8


def test_same_source_accepts_identical() -> None:
    _eeg().check_same_source(_eeg())


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (_eeg(6), "6 channels instead of 4"),
        (_eeg(4, 500.0), "rate 500 Hz instead of 1000 Hz"),
        (_eeg(4, dtype="float64"), "format float64 instead of float32"),
        (StreamDescription("EEG", "EEG", "amp1", ("C0", "C1", "X", "C3"), nominal_rate=1000.0), "'C2'->'X'"),
    ],
)
def test_same_source_rejects_changes(other: StreamDescription, match: str) -> None:
    with pytest.raises(StreamMismatchError, match=match):
        _eeg().check_same_source(other)
