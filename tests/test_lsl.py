"""LSL wrappers and the acquisition thread, against real outlets (some in other processes)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streams.acquisition import StreamReceiver
from streams.description import StreamDescription
from streams.errors import StreamMismatchError, StreamNotFoundError
from streams.lsl import Outlet, StreamQuery, resolve


def _wait_until(cond, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ----------------------------------------------------------------------------- queries
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SimEEG", StreamQuery(name="SimEEG")),
        ("type=EEG", StreamQuery(type="EEG")),
        ("name=A, source_id=x1", StreamQuery(name="A", source_id="x1")),
    ],
)
def test_query_parse(text: str, expected: StreamQuery) -> None:
    assert StreamQuery.parse(text) == expected


@pytest.mark.parametrize("text", ["", "colour=red", "type=", "name=a,b"])
def test_query_parse_rejects_with_example(text: str) -> None:
    with pytest.raises(ValueError, match="type=EEG"):
        StreamQuery.parse(text)


def test_wrong_name_lists_visible_streams(unique_name: str) -> None:
    desc = StreamDescription(unique_name, "EEG", unique_name, ("C1", "C2"), nominal_rate=100.0)
    with Outlet(desc):
        assert resolve(unique_name, timeout=5.0).name() == unique_name
        with pytest.raises(StreamNotFoundError) as info:
            resolve(unique_name + "-typo", timeout=0.5)
    message = str(info.value)
    assert f"no LSL stream matches name={unique_name}-typo" in message
    assert f"name={unique_name!r}" in message  # the visible stream is listed


def test_ambiguous_query_asks_for_source_id(unique_name: str) -> None:
    a = StreamDescription(unique_name, "EEG", unique_name + "-a", ("C1",), nominal_rate=100.0)
    b = StreamDescription(unique_name, "EEG", unique_name + "-b", ("C1",), nominal_rate=100.0)
    with Outlet(a), Outlet(b):
        time.sleep(0.3)
        with pytest.raises(StreamNotFoundError, match="source_id="):
            resolve(unique_name, timeout=2.0)
        assert resolve(f"name={unique_name},source_id={unique_name}-b").source_id() == unique_name + "-b"


# ----------------------------------------------------------------------------- receiving
def test_receiver_gets_every_sample_from_another_process(producer, unique_name: str) -> None:
    rate, n_ch = 500.0, 6
    prod = producer("--name", unique_name, "--channels", str(n_ch), "--rate", str(rate), "--duration", "2",
                    "--chunk", "7")
    with StreamReceiver(unique_name, resolve_timeout=10) as rx:
        assert rx.desc.n_channels == n_ch and rx.desc.channel_names[0] == "C0"
        prod.wait()
        assert _wait_until(lambda: rx.buffer.total >= 1000)
        data, times = rx.buffer.get(0, rx.buffer.total)
    n = int(2 * rate)
    assert len(times) == n
    expected = np.arange(n)[:, None] + np.arange(n_ch)[None, :] / 1000.0
    np.testing.assert_array_equal(data, expected.astype(np.float32))
    # clock-corrected, dejittered timestamps keep the nominal spacing
    np.testing.assert_allclose(np.diff(times), 1 / rate, atol=2e-4)
    assert rx.gaps == [] and rx.error is None
    assert rx.snapshot().measured_rate() == pytest.approx(rate, rel=1e-3)


def test_receiver_string_markers(producer, unique_name: str) -> None:
    prod = producer("--name", unique_name, "--markers", "--duration", "1")
    with StreamReceiver(unique_name, resolve_timeout=10) as rx:
        assert rx.desc.is_string and not rx.desc.is_regular
        prod.wait()
        assert _wait_until(lambda: rx.buffer.total >= 10)
        values, times = rx.buffer.get(0, rx.buffer.total)
    assert [v[0] for v in values] == [f"stim/img{i:04d}/label {i}" for i in range(10)]
    np.testing.assert_allclose(np.diff(times), 0.1, atol=1e-3)


def test_nan_samples_are_counted_not_fatal(producer, unique_name: str) -> None:
    prod = producer("--name", unique_name, "--rate", "500", "--duration", "1", "--nan-every", "50")
    with StreamReceiver(unique_name, resolve_timeout=10) as rx:
        prod.wait()
        assert _wait_until(lambda: rx.buffer.total >= 500)
        assert rx.snapshot().n_nonfinite == 10
        data, _ = rx.buffer.get(0, 500)
    assert np.isnan(data[::50, 0]).all() and np.isfinite(data[1::50]).all()


def test_dropout_is_detected_reconnected_and_marked(producer, unique_name: str) -> None:
    args = ["--name", unique_name, "--source-id", unique_name, "--rate", "500", "--channels", "3"]
    first = producer(*args, "--duration", "30")
    with StreamReceiver(unique_name, resolve_timeout=10, lost_timeout=1.0) as rx:
        assert _wait_until(lambda: rx.buffer.total >= 250)
        first.kill()  # the amplifier process dies mid-recording
        n_before = rx.buffer.total
        time.sleep(0.5)
        second = producer(*args, "--duration", "1", "--start-index", "100000")
        assert _wait_until(lambda: rx.buffer.total >= n_before + 400)
        second.wait()
        gaps = rx.gaps
        stats = rx.snapshot()
        data, times = rx.buffer.get(0, rx.buffer.total)
    assert stats.n_reconnects == 1 and rx.error is None
    assert len(gaps) == 1 and "reconnected" in gaps[0].reason
    assert gaps[0].duration > 0.4
    # the gap sits exactly between the last old sample and the first new one
    k = int(np.argmax(data[:, 0] >= 100000))
    assert times[k - 1] == gaps[0].start_time and times[k] == gaps[0].end_time
    assert data[k, 0] == 100000


def test_reconnect_with_other_channel_count_stops_with_clear_error(producer, unique_name: str) -> None:
    first = producer("--name", unique_name, "--source-id", unique_name, "--channels", "4", "--duration", "30")
    with StreamReceiver(unique_name, resolve_timeout=10, lost_timeout=1.0) as rx:
        assert _wait_until(lambda: rx.buffer.total >= 100)
        first.kill()
        producer("--name", unique_name, "--source-id", unique_name, "--channels", "8", "--duration", "5")
        assert _wait_until(lambda: rx.error is not None)
        n_after = rx.buffer.total
        time.sleep(0.3)
        assert rx.buffer.total == n_after  # nothing from the changed stream was appended
    assert isinstance(rx.error, StreamMismatchError)
    assert "8 channels instead of 4" in str(rx.error) and "Nothing was appended" in str(rx.error)
