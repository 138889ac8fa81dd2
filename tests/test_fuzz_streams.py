"""Fuzzing the stream boundaries (issue 18): LSL stream metadata, marker strings, ``bci`` command-line numbers.

Every target has one property, checked by :func:`clear_error_or_result`: the call returns (and what it returns is
sane), or it raises one clear user error (``ValueError``/``TypeError``/a ``StreamsError``) whose one-line message
names what was wrong; never another exception, never a traceback from deep inside. The number of cases comes from
the hypothesis profile in ``tests/conftest.py`` ("ci": 30; ``HYPOTHESIS_PROFILE=long``: 2000).

* ``test_fuzz_stream_description``: LSL stream XML parsed by liblsl itself (``lsl_streaminfo_from_xml``, what an
  inlet does with the XML a sender publishes), then :meth:`StreamDescription.from_lsl_info`; plus real outlets
  (100,000 channels, empty and hostile labels, 1e9 Hz) opened by :class:`StreamReceiver`.
* ``test_fuzz_marker_strings``: the marker grammar and a real decoding pipeline (every marker gives a window or a
  ``dropped`` record; events file and Zarr hold the string exactly); plus a real outlet pushing bytes that are
  not UTF-8.
* ``test_fuzz_cli_numbers``: every numeric flag of every ``bci`` command, found by walking the parser.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pylsl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams._keys import MAX_KEY_LENGTH, sanitize_key
from streams.acquisition import StreamReceiver
from streams.description import LSL_FORMATS, StreamDescription
from streams.errors import StreamsError
from streams.lsl import decode_text
from streams.markers import check_marker_text, format_marker, marker_stream_description, parse_marker
from streams.session import SessionReader, SessionWriter

#: What a boundary may raise: a user error with a clear message.
USER_ERRORS = (ValueError, TypeError, StreamsError)


def clear_error_or_result(call: Callable[..., Any], *args: Any, naming: Sequence[str] = (), **kwargs: Any) -> Any:
    """The fuzz property: ``call(*args, **kwargs)`` returns, or raises one clear user error.

    A user error must be one of :data:`USER_ERRORS`, its message one line (no traceback, no dump) that contains
    at least one of ``naming`` (the stream, the field, the flag). Anything else propagates and fails the test.

    Returns
    -------
    object or None
        The call's result, or ``None`` when it refused the input.
    """
    try:
        return call(*args, **kwargs)
    except USER_ERRORS as exc:
        message = str(exc)
        assert message and "Traceback" not in message, f"unclear error {exc!r}"
        assert "\n" not in message.strip(), f"the error is not one line: {message!r}"
        if naming:
            assert any(n in message for n in naming), f"{message!r} names none of {list(naming)}"
        return None


# ====================================================================== 1. LSL stream metadata
_LIB = pylsl.lib.lib
_LIB.lsl_streaminfo_from_xml.restype = ctypes.c_void_p
_LIB.lsl_streaminfo_from_xml.argtypes = [ctypes.c_char_p]

#: Text a hostile or careless sender may put in a name, label, type or unit.
HOSTILE_TEXT = ["", " ", "<&>'\"", "]]>", "\x1b[31mred", "a\nb\tc", "\x7f", "é ü 中文 🧠", "../../etc", "..",
                "zarr.json", "/abs/path", "C:\\x", "a" * 65536]
hostile_text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=30))
#: Fields of a stream description an error may name.
FIELDS = ("channel", "nominal_rate", "channel_format", "name", "liblsl")


def info_from_xml(xml: str) -> pylsl.StreamInfo:
    """Parse stream XML with liblsl's own parser, as an inlet does with what a sender publishes."""
    return pylsl.StreamInfo(handle=_LIB.lsl_streaminfo_from_xml(xml.encode("utf-8", "surrogatepass")))


@st.composite
def stream_xml(draw: st.DrawFn) -> str:
    """Stream XML as a sender could publish it: hostile fields, channel counts, rates, formats and <desc>."""
    n = draw(st.sampled_from([0, 1, 2, 5, 100_000, -1]))
    rate = draw(st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e9", "1e400", "abc", "", "250"]),
                          st.floats().map(repr)))
    fmt = draw(st.one_of(st.sampled_from([*LSL_FORMATS, "undefined", "bogus", ""]), st.text(max_size=8)))
    name = draw(st.one_of(st.just("fuzz-stream"), hostile_text))
    desc = ""
    if 0 < n <= 5:
        kind = draw(st.sampled_from(["none", "labels", "partial", "garbled"]))
        if kind in ("labels", "partial"):
            count = n if kind == "labels" else draw(st.integers(0, n + 2))
            channels = "".join(
                "<channel>" + "".join(f"<{f}>{escape(draw(hostile_text))}</{f}>"
                                      for f in draw(st.sets(st.sampled_from(["label", "type", "unit"]))))
                + "</channel>" for _ in range(count))
            desc = f"<channels>{channels}</channels>"
        elif kind == "garbled":
            desc = draw(st.sampled_from(["<channels>", "<channels><channel><label>x", "<channel/>", "&amp;<",
                                         "<channels><channel>text</channel></channels>"]))
    return (f"<?xml version=\"1.0\"?><info><name>{escape(name)}</name><type>{escape(draw(hostile_text))}</type>"
            f"<channel_count>{n}</channel_count><channel_format>{escape(fmt)}</channel_format>"
            f"<source_id>{escape(draw(hostile_text))}</source_id><nominal_srate>{escape(rate)}</nominal_srate>"
            f"<version>1.1</version><created_at>0</created_at><uid>u</uid><session_id>default</session_id>"
            f"<hostname>h</hostname><desc>{desc}</desc></info>")


def check_description(desc: StreamDescription, n_channels: int) -> None:
    """A description read from a sender: sane, and its Zarr key a single safe path component."""
    assert desc.n_channels == n_channels >= 1
    assert len(set(desc.channel_names)) == n_channels and all(desc.channel_names)
    for text in (*desc.channel_names, *desc.channel_types, *desc.channel_units):
        assert not any(unicodedata.category(c) == "Cc" for c in text), f"control character left in {text!r}"
    assert math.isfinite(desc.nominal_rate) and desc.nominal_rate >= 0
    assert desc.dtype in LSL_FORMATS
    json.dumps(desc.to_dict())
    check_key(desc.name)


def check_key(name: str) -> None:
    """``sanitize_key(name)`` names one folder inside the session, whatever the name."""
    key = sanitize_key(name)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", key) and len(key) <= MAX_KEY_LENGTH and key != "zarr.json"
    assert not key.startswith(".")
    root = Path("/session/streams")
    assert (root / key).resolve().parent == root


@given(xml=stream_xml())
def test_fuzz_stream_description(xml: str) -> None:
    info = info_from_xml(xml)
    naming = [repr(info.name()), *FIELDS]
    desc = clear_error_or_result(StreamDescription.from_lsl_info, info, naming=naming)
    if desc is not None:
        check_description(desc, info.channel_count())


@given(name=hostile_text)
def test_fuzz_stream_keys(name: str) -> None:
    check_key(name)


def test_hostile_stream_names_stay_inside_the_session(tmp_path: Path) -> None:
    """Real Zarr on disk: names that would escape, collide with metadata or exceed the file system's limit."""
    names = ["../../etc", "..", "zarr.json", "a" * 65536, "/abs", "é"]
    path = tmp_path / "s.zarr"
    with SessionWriter(path) as writer:
        for name in names:
            desc = StreamDescription(name=name, type="EEG", source_id="s", channel_names=("c",), nominal_rate=10.0)
            key = writer.add_stream(desc)
            writer.append(key, np.zeros((3, 1), np.float32), np.arange(3.0))
    reader = SessionReader(path)
    assert sorted(reader.description(k).name for k in reader.streams) == sorted(names)
    assert all(p.resolve().is_relative_to(path.resolve()) for p in tmp_path.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def _outlet(name: str, n: int, rate: float, labels: Sequence[str] | None = None) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EEG", n, rate, "float32", f"{name}-src")
    if labels is not None:
        channels = info.desc().append_child("channels")
        for label in labels:
            channels.append_child("channel").append_child_value("label", label)
    return pylsl.StreamOutlet(info, 0, 1)  # liblsl allocates rate x max_buffered samples up front: keep it 1 s


def test_real_outlets_with_hostile_metadata(unique_name: str) -> None:
    """A real outlet per case, resolved and opened by the project's receiver."""
    wide = _outlet(f"{unique_name}-wide", 100_000, 1.0)
    labels = ["", "<&>'\"", "\x1b[31mred", "é 中文", "a" * 65536, ""]
    hostile = _outlet(f"{unique_name}-hostile <&> é", len(labels), 100.0, labels)
    fast = _outlet(f"{unique_name}-fast", 1, 1e6)  # 1e9 works too, but liblsl takes 10 s to make its outlet
    receivers = []
    try:
        receiver = StreamReceiver(f"{unique_name}-wide", resolve_timeout=5.0)
        receivers.append(receiver)
        check_description(receiver.open(), 100_000)
        assert receiver.desc.channel_names[-1] == "ch100000"

        receiver = StreamReceiver(f"{unique_name}-hostile <&> é", resolve_timeout=5.0)
        receivers.append(receiver)
        desc = receiver.open()
        check_description(desc, len(labels))
        assert desc.channel_names == ("ch001", "<&>'\"", "\\x1b[31mred", "é 中文", "a" * 65536, "ch006")

        receiver = StreamReceiver(f"{unique_name}-fast", resolve_timeout=5.0, buffer_seconds=600.0)
        receivers.append(receiver)
        assert clear_error_or_result(receiver.open, naming=[f"'{unique_name}-fast'"]) is None
        with pytest.raises(ValueError, match="GiB buffer"):
            receiver.open()
    finally:
        for receiver in receivers:
            receiver.stop()
        del wide, hostile, fast


# ====================================================================== 2. marker strings
HOSTILE_MARKERS = ["", " ", "stim/", "stim//", "stim///", "stim/ /x", "/" * 200, "stim/" + "/" * 50, "stim/a/b/c/d",
                   "block_start/", "block_start/x", "block_end/-1", "\x00", "stim/\x00/\x00", "a\nb", "\x1b[2J",
                   "stim/img\u0301/é", "x" * 65536, "stim/" + "i" * 65536 + "/" + "l" * 65536, "nan", "1e400",
                   "stim/img0001/red triangle"]
#: Marker strings as the runtime receives them: any text, and any bytes decoded as the receiver does.
marker_text = st.one_of(st.sampled_from(HOSTILE_MARKERS), st.text(max_size=40),
                        st.binary(max_size=40).map(decode_text),
                        st.lists(st.sampled_from(["stim", "/", "img1", " ", "\t", "lbl", "\x00"]), max_size=12)
                        .map("".join))


@pytest.fixture(scope="module")
def marker_decoder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str]], list[dict]]:
    """A real decoding pipeline (an untrained EEG checkpoint): markers in, records out, fed 1 s of data."""
    import torch

    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config
    from bci.runtime.assemble import load_encoder, pipeline_factory
    from bci.runtime.sinks import ListSink

    torch.manual_seed(0)
    encoder = load_encoder(save_checkpoint(build_model(default_config("eeg_convnet", n_classes=4)),
                                           tmp_path_factory.mktemp("model") / "ck"), device="cpu")
    cfg = encoder.config
    names = tuple(cfg.ch_names or (f"ch{i + 1:03d}" for i in range(cfg.n_chans)))
    desc = StreamDescription(name="FuzzEEG", type="EEG", source_id="fuzz", channel_names=names,
                             nominal_rate=cfg.sfreq)
    n = int(cfg.sfreq)
    data = np.random.default_rng(0).standard_normal((n, len(names))).astype(np.float32) * 1e-5
    times = np.arange(n) / cfg.sfreq

    def decode(markers: list[str]) -> list[dict]:
        sink = ListSink()
        pipeline = pipeline_factory(encoder, [sink])(desc)
        # one marker early enough for a window, the others in the last 0.1 s (their window ends after the data)
        pipeline.push_markers(markers, 0.05 + np.r_[0.0, 0.85 + np.arange(len(markers) - 1) * 1e-3][: len(markers)])
        pipeline.push_data(data, times)
        pipeline.finish()
        return [r for r in sink.records if r["type"] in ("window", "dropped")]

    return decode


def _check_parts(value: str) -> None:
    image_id, label = clear_error_or_result(parse_marker, value, naming=["marker"])
    for part in (image_id, label):
        assert part is None or (isinstance(part, str) and part and part == part.strip())
    if image_id is not None and clear_error_or_result(format_marker, image_id, label,
                                                      naming=["image_id", "label"]) is not None:
        assert parse_marker(format_marker(image_id, label)) == (image_id, label)
    if clear_error_or_result(check_marker_text, "marker", value, naming=["marker="]) is not None:
        assert value.strip() and not any(unicodedata.category(c) == "Cc" for c in value)


@given(markers=st.lists(marker_text, min_size=1, max_size=4))
def test_fuzz_marker_strings(markers: list[str], marker_decoder: Callable[[list[str]], list[dict]],
                             tmp_path_factory: pytest.TempPathFactory) -> None:
    for value in markers:
        _check_parts(value)
    records = marker_decoder(markers)
    # every marker: exactly one window or one dropped record with a reason (duplicates are reported, not lost)
    assert sorted(r["marker"] for r in records) == sorted(markers)
    assert all(r["type"] == "window" or r["reason"] for r in records)
    # the events file holds one whole line per record, the marker exactly as received
    from bci.runtime.sinks import to_json

    for record in records:
        line = to_json(record)
        assert "\n" not in line and json.loads(line)["marker"] == record["marker"]
    # a Zarr session holds them exactly
    path = tmp_path_factory.mktemp("markers") / "m.zarr"
    with SessionWriter(path) as writer:
        key = writer.add_stream(marker_stream_description("FuzzMarkers", "fuzz"))
        writer.append(key, np.array(markers, dtype=object).reshape(-1, 1), np.arange(len(markers), dtype=float))
    _, values = SessionReader(path).markers()
    assert list(values) == markers


def test_real_marker_outlet_with_bytes_that_are_not_utf8(unique_name: str) -> None:
    """pylsl's own decode raises on such bytes; the receiver keeps every marker, with ``\\xNN`` escapes."""
    sent = [b"\xff\xfe", b"stim/img\xc3(/label", "x" * 65536, "a\x00b", "", "stim/é/ü"]
    info = pylsl.StreamInfo(unique_name, "Markers", 1, 0.0, "string", f"{unique_name}-src")
    outlet = pylsl.StreamOutlet(info)
    receiver = StreamReceiver(unique_name, resolve_timeout=5.0)
    try:
        receiver.start()
        assert outlet.wait_for_consumers(5.0)
        for value in sent:
            outlet.push_sample([value])
        deadline = time.monotonic() + 10.0
        while receiver.snapshot().n_samples < len(sent) and time.monotonic() < deadline and receiver.running:
            time.sleep(0.05)
        assert receiver.error is None and receiver.running
        values, _ = receiver.buffer.get(0, len(sent))
    finally:
        receiver.stop()
        del outlet
    assert list(values[:, 0]) == ["\\xff\\xfe", "stim/img\\xc3(/label", "x" * 65536, "a\x00b", "", "stim/é/ü"]


# ====================================================================== 3. command-line numbers
#: Flags whose numbers may be negative (an offset before the marker, a time shift).
SIGNED_FLAGS = frozenset({"--offset", "--block-gap"})
#: Flags that may be infinite (``--speed max``: as fast as possible).
INFINITE_FLAGS = frozenset({"--speed"})
#: Number-like strings a user (or a script with a bug) may type.
HOSTILE_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "-0", "0", "-1", "1e400", "-1e400", "1e-400", "0x10",
                   "", " ", " 5 ", "1_000", "9" * 30, "9" * 5000, "-" + "9" * 30, "2147483648", "1.5", "1e3", "٣",
                   "1,5", "5s", "10%"]
numbers = st.one_of(st.sampled_from(HOSTILE_NUMBERS), st.integers().map(str), st.floats().map(repr),
                    st.text(max_size=8))


@functools.cache
def _parser() -> Any:
    """The ``bci`` parser, built once (parsing does not change it)."""
    from bci.cli.main import build_parser

    return build_parser()


def _numeric_flags() -> list[tuple[tuple[str, ...], Any]]:
    """Every optional flag that converts its value to a number, as ``(command path, action)``, from the parser."""
    import argparse

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*path, name))
            elif action.option_strings and action.type is not None and _is_numeric(action.type):
                yield path, action

    return list(walk(_parser(), ()))


def _is_numeric(convert: Callable[[str], Any]) -> bool:
    """Whether a flag's converter turns ``"1"`` into a number (or numbers): a numeric flag."""
    try:
        value = convert("1")
    except Exception:
        return False
    values = value if isinstance(value, (list, tuple)) else [value]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _minimal_argv(path: tuple[str, ...]) -> list[str]:
    """The command with a placeholder for each required argument (parsing only: nothing runs)."""
    parser = _parser()
    for name in path:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    argv = list(path)
    for action in parser._actions:
        if not action.option_strings and action.nargs not in ("?", "*") and action.dest != "help":
            argv.append(str(action.choices[0]) if action.choices else "x")
        elif action.option_strings and action.required:
            argv += [action.option_strings[-1], str(next(iter(action.choices))) if action.choices else "x"]
    for group in parser._mutually_exclusive_groups:
        if group.required:
            argv += [group._group_actions[0].option_strings[-1], "x"]
    return argv


NUMERIC_FLAGS = _numeric_flags()


def parse_flag(path: tuple[str, ...], flag: str, value: str) -> Any:
    """Parse ``bci PATH... FLAG=VALUE`` (no command runs); a refusal becomes the ``ValueError`` of its message.

    A refusal must be argparse's exit status 2 with exactly one ``error:`` line on stderr, the last one, and no
    traceback.
    """
    import contextlib
    import io

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = _parser().parse_args([*_minimal_argv(path), f"{flag}={value}"])
    except SystemExit as exc:
        lines = stderr.getvalue().strip().splitlines()
        assert exc.code == 2, f"exit status {exc.code}: {stderr.getvalue()}"
        assert "Traceback" not in stderr.getvalue()
        errors = [line for line in lines if "error:" in line]
        assert errors == lines[-1:], f"not one error line: {lines}"
        raise ValueError(lines[-1]) from None
    return args


def _check_accepted(flag: str, value: Any) -> None:
    """An accepted number makes sense: finite, in int64 (numpy, torch), not negative unless the flag is signed."""
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, float):
            assert math.isfinite(v) or flag in INFINITE_FLAGS, f"{flag} accepted {v!r}"
        if isinstance(v, int):
            assert -(2**63) <= v < 2**63, f"{flag} accepted {v!r}"
        assert not v < 0 or flag in SIGNED_FLAGS, f"{flag} accepted the negative {v!r}"


@given(case=st.sampled_from(NUMERIC_FLAGS), value=numbers)
def test_fuzz_cli_numbers(case: tuple[tuple[str, ...], Any], value: str) -> None:
    path, action = case
    flag = action.option_strings[-1]
    args = clear_error_or_result(parse_flag, path, flag, value, naming=[f"argument {'/'.join(action.option_strings)}"])
    if args is not None:
        _check_accepted(flag, getattr(args, action.dest))


def test_every_numeric_flag_refuses_nan_inf_and_negatives() -> None:
    """Each numeric flag of each command once with each value that makes no sense for it (the fuzz samples)."""
    assert len(NUMERIC_FLAGS) > 100  # the walk found the commands
    for path, action in NUMERIC_FLAGS:
        flag = action.option_strings[-1]
        bad = ["nan", "1e400", "9" * 5000] + ([] if flag in INFINITE_FLAGS else ["inf"]) \
            + ([] if flag in SIGNED_FLAGS else ["-1"])
        for value in bad:
            args = clear_error_or_result(parse_flag, path, flag, value,
                                         naming=[f"argument {'/'.join(action.option_strings)}"])
            if args is not None:
                _check_accepted(flag, getattr(args, action.dest))
