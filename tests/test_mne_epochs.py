"""MNE round trips of epoch datasets (offline.data.mne_epochs, bci epochs --to-fif, bci import mne-epochs)
and the progress-bar decision of the commands (bci.cli.progress)."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import termios
import threading
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest

from bci.cli.main import main
from bci.cli.progress import show_progress
from offline.data.build import SimulationOptions, epochs_from_simulation
from offline.data.epochs import DatasetFormatError, EpochDataset
from offline.data.mne_epochs import (
    from_mne_epochs,
    read_epochs_file,
    save_epochs_fif,
    to_mne_epochs,
)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small simulated epoch dataset (3 classes x 4 trials, 2 blocks each, block + zero-shot splits) and its session."""
    tmp = tmp_path_factory.mktemp("mne")
    report = epochs_from_simulation(tmp / "sim.zarr", SimulationOptions(n_classes=3, n_per_class=4, n_blocks=2,
                                                                        seed=3, snr=1.0),
                                    keep_session=tmp / "session.zarr")
    return report.path, tmp / "session.zarr"


def _same_dataset(a: EpochDataset, b: EpochDataset) -> None:
    assert np.array_equal(a.get_batch(np.arange(a.n_epochs)), b.get_batch(np.arange(b.n_epochs)))
    assert a.class_names == b.class_names and np.array_equal(a.labels, b.labels) and a.image_ids == b.image_ids
    for name in ("subject", "session", "block", "marker_time"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.sfreq, a.ch_names, a.ch_types, a.modality) == (b.sfreq, b.ch_names, b.ch_types, b.modality)
    assert sorted(a.splits) == sorted(b.splits)
    for name in a.splits:
        pa, pb = a.split_info(name), b.split_info(name)
        assert pa.kind == pb.kind and pa.parts.keys() == pb.parts.keys()
        assert all(np.array_equal(pa.parts[p], pb.parts[p]) for p in pa.parts)
    assert a.fingerprint() == b.fingerprint()


def test_to_mne_epochs_carries_data_events_and_metadata(simulated: tuple[Path, Path]) -> None:
    ds = EpochDataset.open(simulated[0])
    epochs = to_mne_epochs(ds)
    assert isinstance(epochs, mne.EpochsArray) and len(epochs) == ds.n_epochs == 12
    data = epochs.get_data()
    assert data.dtype == np.float64
    assert np.array_equal(data, ds.get_batch(np.arange(ds.n_epochs)).astype(np.float64))  # exact
    assert epochs.ch_names == ds.ch_names and set(epochs.get_channel_types()) == {"eeg"}
    assert epochs.info["sfreq"] == ds.sfreq and epochs.tmin == pytest.approx(ds.attrs["window"]["offset"])
    assert len(epochs.times) == ds.n_times
    assert epochs.event_id == {name: k + 1 for k, name in enumerate(ds.class_names)}
    assert np.array_equal(epochs.events[:, 2], ds.labels + 1)
    meta = epochs.metadata
    assert meta["image_id"].tolist() == ds.image_ids
    assert meta["label"].tolist() == [ds.class_names[k] for k in ds.labels]
    for name in ("subject", "session", "block", "marker_time"):
        assert np.array_equal(meta[name].to_numpy(), getattr(ds, name)), name
    assert meta["subject_name"].unique().tolist() == ds.subject_names
    for part, members in ds.split("block").items():
        assert set(np.flatnonzero(meta["split_block"].to_numpy() == part)) == set(members.tolist())
    for name in ds.class_names:  # mne selection by event name works
        assert len(epochs[name]) == int(np.sum(ds.labels == ds.class_names.index(name)))
    test = to_mne_epochs(ds, split="block", part="test")
    assert test.metadata["image_id"].tolist() == [ds.image_ids[i] for i in ds.split("block")["test"]]


def test_fif_and_back_through_the_cli_equal_the_dataset(simulated: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    session = simulated[1]
    out, fif = tmp_path / "cut.zarr", tmp_path / "cut-epo.fif"
    assert main(["epochs", str(session), str(out), "--to-fif", str(fif), "--splits", "block,zero_shot",
                 "--no-progress"]) == 0
    assert f"wrote mne epochs {fif}" in capsys.readouterr().out
    ds = EpochDataset.open(out)
    expected = to_mne_epochs(ds)
    read = read_epochs_file(fif)
    assert np.array_equal(read.get_data(), expected.get_data())
    assert np.array_equal(read.events, expected.events) and read.event_id == expected.event_id
    pd.testing.assert_frame_equal(read.metadata.reset_index(drop=True), expected.metadata.reset_index(drop=True))
    assert read.tmin == pytest.approx(expected.tmin) and read.ch_names == expected.ch_names

    back = tmp_path / "back.zarr"
    assert main(["import", "mne-epochs", str(fif), str(back)]) == 0
    printed = capsys.readouterr().out
    assert "labels from metadata, image ids from metadata" in printed and "splits restored: block, zero_shot" in printed
    restored = EpochDataset.open(back)
    _same_dataset(ds, restored)
    assert restored.attrs["window"] == ds.attrs["window"] and restored.preprocessing == ds.preprocessing
    assert restored.source["from_fingerprint"] == ds.fingerprint() and restored.source["file"] == str(fif)


def test_event_by_image_tags_and_labels_from_event_names(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    ds = EpochDataset.open(simulated[0])
    epochs = to_mne_epochs(ds, event_by="image")
    assert set(epochs.event_id) == {f"{ds.class_names[k]}/{i}" for k, i in zip(ds.labels, ds.image_ids)}
    assert len(epochs[ds.class_names[0]]) == int(np.sum(ds.labels == 0))  # "class/image" tags select a class
    epochs.metadata = None  # only the event names are left
    result = from_mne_epochs(epochs, tmp_path / "names.zarr")
    assert (result.labels_from, result.image_ids_from) == ("event names", "event names")
    restored = EpochDataset.open(result.path)
    assert restored.class_names == ds.class_names  # class order kept by the description record
    assert np.array_equal(restored.labels, ds.labels) and restored.image_ids == ds.image_ids
    assert result.defaulted == ("subject", "session", "block") and not restored.splits
    assert restored.source["defaulted"] == ["subject", "session", "block"]


def test_an_epochs_array_built_with_mne_imports(tmp_path: Path, rng: np.random.Generator) -> None:
    info = mne.create_info(["Fz", "Cz", "Pz", "EOG"], 250.0, ["eeg", "eeg", "eeg", "eog"])
    data = rng.normal(scale=1e-5, size=(6, 4, 50))
    events = np.column_stack([np.arange(6) * 500 + 1000, np.zeros(6, int), [1, 2, 1, 2, 1, 2]])
    epochs = mne.EpochsArray(data, info, events=events, tmin=-0.1, event_id={"face": 1, "house": 2}, verbose=False)
    result = from_mne_epochs(epochs, tmp_path / "plain.zarr")
    ds = EpochDataset.open(result.path)
    assert ds.class_names == ["face", "house"] and ds.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.image_ids == ["face", "house"] * 3  # no image information: the event name
    assert np.array_equal(ds.get_batch(np.arange(6)), data.astype(np.float32))
    assert ds.ch_types == ["eeg", "eeg", "eeg", "eog"] and ds.sfreq == 250.0
    assert ds.attrs["window"] == {"offset": pytest.approx(-0.1), "n_times": 50}

    meta = pd.DataFrame({"label": ["a", "b", "a", "b", "a", "b"], "image_id": [f"im{k}" for k in range(6)],
                         "block": [0, 0, 1, 1, 2, 2],
                         "split_mine": ["train", "train", "train", "train", "test", "test"]})
    with_meta = mne.EpochsArray(data, info, events=events, event_id={"face": 1, "house": 2}, metadata=meta,
                                verbose=False)
    result = from_mne_epochs(with_meta, tmp_path / "meta.zarr")
    ds = EpochDataset.open(result.path)
    assert ds.class_names == ["a", "b"] and ds.image_ids == [f"im{k}" for k in range(6)]
    assert ds.block.tolist() == [0, 0, 1, 1, 2, 2] and result.defaulted == ("subject", "session")
    assert ds.split_info("mine").kind == "custom" and ds.split("mine")["test"].tolist() == [4, 5]


def test_bad_input_gets_clear_errors(tmp_path: Path, rng: np.random.Generator,
                                     capsys: pytest.CaptureFixture[str], simulated: tuple[Path, Path]) -> None:
    info = mne.create_info(["Fz", "Cz"], 100.0, "eeg")
    unlabelled = mne.EpochsArray(rng.normal(size=(3, 2, 20)), info, verbose=False)  # event_id {'1': 1}
    with pytest.raises(DatasetFormatError, match=r"carry no labels: no metadata column 'label'.*event_id"):
        from_mne_epochs(unlabelled, tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(TypeError, match="epochs"):
        from_mne_epochs(np.zeros((3, 2, 20)), tmp_path / "x.zarr")

    raw_file = tmp_path / "rec_raw.fif"
    mne.io.RawArray(rng.normal(size=(2, 300)), info, verbose=False).save(raw_file, verbose=False)
    with pytest.raises(ValueError, match="is not an mne epochs file.*bci import raw"):
        read_epochs_file(raw_file)
    assert main(["import", "mne-epochs", str(raw_file), str(tmp_path / "y.zarr")]) == 2
    assert "is not an mne epochs file" in capsys.readouterr().err and not (tmp_path / "y.zarr").exists()

    with pytest.raises(ValueError, match=r"must end with -epo\.fif"):
        save_epochs_fif(unlabelled, tmp_path / "wrong.fif")
    out = tmp_path / "never.zarr"
    assert main(["epochs", str(simulated[1]), str(out), "--to-fif", str(tmp_path / "bad.fif"), "--no-progress"]) == 2
    assert "--to-fif" in capsys.readouterr().err and not out.exists()  # refused before the build
    with pytest.raises(ValueError, match="split='nope' is not stored"):
        to_mne_epochs(simulated[0], split="nope")
    with pytest.raises(ValueError, match="event_by"):
        to_mne_epochs(simulated[0], event_by="class")


# --------------------------------------------------------------------------- progress bars
def test_show_progress_decides_on_the_flag_and_the_terminal() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert show_progress(False, tty) is True
            assert show_progress(True, tty) is False
    finally:
        os.close(master)
        os.close(slave)
    assert show_progress(False, io.StringIO()) is False  # a pipe or file: no bar


def _stderr_on_a_terminal(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[int, str]:
    """Run ``bci ARGV`` in-process with sys.stderr on a real pseudo-terminal; returns (status, what it printed)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0 columns would truncate bars
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the slave side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    tty = open(slave, "w", buffering=1, encoding="utf-8")
    try:
        monkeypatch.setattr("sys.stderr", tty)
        status = main(argv)
        tty.flush()
    finally:
        monkeypatch.undo()
        tty.close()
        reader.join(timeout=10)
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


def test_epochs_bar_on_a_terminal_and_none_with_no_progress(simulated: tuple[Path, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    session = str(simulated[1])
    status, shown = _stderr_on_a_terminal(monkeypatch, ["epochs", session, str(tmp_path / "a.zarr"), "--splits", ""])
    assert status == 0 and "epochs: 100%|" in shown
    status, quiet = _stderr_on_a_terminal(monkeypatch, ["epochs", session, str(tmp_path / "b.zarr"), "--splits", "",
                                                        "--no-progress"])
    assert status == 0 and "%|" not in quiet
