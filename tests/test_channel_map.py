"""Channel mapping stream -> model (bci.preprocessing.channel_map): the rules, interpolation, bad input,
and ``bci live`` decoding an independent amplifier that names its channels E1..E128."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.preprocessing import PreprocessConfig
from bci.preprocessing.channel_map import ChannelMap, ChannelMapOptions, map_channels, normalise_name
from bci.runtime.assemble import DecodeOptions, load_encoder, pipeline_factory
from bci.runtime.live import LiveOptions, run_live
from bci.runtime.pipeline import Pipeline
from bci.runtime.replay import decode_session
from bci.runtime.sinks import ListSink
from streams.description import StreamDescription
from streams.session import SessionReader
from streams.simulate import SimulationSpec, simulate_to_session
from streams.synthetic.eeg import montage_geometry

REPO = Path(__file__).resolve().parents[1]
EGI_MAP = REPO / "docs" / "examples" / "egi128_to_biosemi128.tsv"
BIOSEMI = montage_geometry("biosemi128")[0]


def _data(rng: np.random.Generator, n_channels: int, n: int = 50) -> np.ndarray:
    return rng.standard_normal((n, n_channels)).astype(np.float32)


# ------------------------------------------------------------------------------------------ rules
def test_identity_returns_the_input_itself(rng: np.random.Generator) -> None:
    cmap = map_channels(BIOSEMI, BIOSEMI)
    x = _data(rng, 128)
    assert cmap.is_identity and cmap.method == "identity" and cmap.apply(x) is x
    assert "no mapping" in cmap.describe()
    assert json.loads(json.dumps(cmap.to_dict()))["pairs"][0] == ["A1", "A1"]


def test_exact_names_in_another_order_are_a_pure_take(rng: np.random.Generator) -> None:
    stream = BIOSEMI[::-1] + ["Status"]
    cmap = map_channels(stream, BIOSEMI)
    x = _data(rng, 129)
    y = cmap.apply(x)
    assert cmap.method == "index" and y.dtype == np.float32 and y.shape == (50, 128)
    np.testing.assert_array_equal(y, x[:, [stream.index(n) for n in BIOSEMI]])
    assert cmap.dropped == ("Status",) and cmap.counts()["exact"] == 128
    assert "dropped 1 stream channel(s): Status" in cmap.describe()


@pytest.mark.parametrize(("raw", "key"), [("EEG Fp1-Ref", "fp1"), ("FP1", "fp1"), ("Fp1-A1", "fp1"),
                                          ("EEG:Cz-M2", "cz"), ("Fp1-F7", "fp1-f7"), ("Ref", "ref"), ("EEG", "eeg")])
def test_normalise_name(raw: str, key: str) -> None:
    assert normalise_name(raw) == key


def test_normalised_names_match(rng: np.random.Generator) -> None:
    model = ["Fp1", "Fp2", "Cz", "Oz"]
    stream = ["EEG FP2-REF", "TRIG", "EEG Oz-Ref", "fp1", "EEG CZ-A1"]
    cmap = map_channels(stream, model)
    x = _data(rng, 5)
    np.testing.assert_array_equal(cmap.apply(x), x[:, [3, 0, 4, 2]])
    assert cmap.rules == ("normalised",) * 4 and cmap.dropped == ("TRIG",)
    assert "4 by normalised name" in cmap.describe()


def test_ambiguous_normalised_names_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"'Fp1'.*'EEG FP1-Ref'.*'fp1-A2'.*ambiguous.*--channel-map"):
        map_channels(["EEG FP1-Ref", "fp1-A2", "Cz"], ["Fp1", "Cz"])


def test_explicit_map_tsv_json_and_dict(tmp_path: Path, rng: np.random.Generator) -> None:
    stream, model = ["Ch1", "Ch2", "Ch3"], ["Cz", "Pz", "Oz"]
    tsv = tmp_path / "m.tsv"
    tsv.write_text("# my amp\nstream\tmodel\nCh1\tOz\n\nCh2\tCz\nCh3\tPz\n")
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"Ch1": "Oz", "Ch2": "Cz", "Ch3": "Pz"}))
    x = _data(rng, 3)
    for source in (tsv, str(js), {"Ch1": "Oz", "Ch2": "Cz", "Ch3": "Pz"}):
        cmap = map_channels(stream, model, channel_map=source)
        np.testing.assert_array_equal(cmap.apply(x), x[:, [1, 2, 0]])
        assert cmap.counts()["file"] == 3


def test_the_shipped_egi_example_file() -> None:
    egi = [f"E{i}" for i in range(1, 129)]
    cmap = map_channels(egi + ["TRIG"], BIOSEMI, channel_map=EGI_MAP)
    assert cmap.sources == tuple(range(128)) and cmap.dropped == ("TRIG",)
    assert cmap.to_dict()["pairs"][:2] == [["E1", "A1"], ["E2", "A2"]]


def test_montage_matching_pairs_nearby_electrodes() -> None:
    """GSN-HydroCel-128 electrodes named E<i> find the biosemi128 electrodes at (almost) their place."""
    cmap = map_channels([f"E{i}" for i in range(1, 129)], BIOSEMI, stream_montage="GSN-HydroCel-128",
                        max_interpolated=1.0)
    pairs = cmap.to_dict()["pairs"]
    assert len(pairs) >= 10 and cmap.counts()["montage"] == len(pairs)
    # checked independently of the module: angles between mne's own positions, after a sphere fit
    gsn, gsn_dirs, _ = montage_geometry("GSN-HydroCel-128")
    bio_dirs = montage_geometry("biosemi128")[1]
    spacing = np.median(np.sort(np.arccos(np.clip(bio_dirs @ bio_dirs.T, -1, 1)), axis=1)[:, 1])
    for s, m in pairs:
        angle = np.arccos(np.clip(gsn_dirs[gsn.index(s)] @ bio_dirs[BIOSEMI.index(m)], -1, 1))
        assert angle <= 0.5 * spacing + 1e-9
    assert len({s for s, _ in pairs}) == len(pairs)  # one-to-one


def test_interpolation_equals_mne_interpolate_bads(rng: np.random.Generator) -> None:
    missing = ["A5", "B12", "C30", "D7"]
    stream = [n for n in BIOSEMI if n not in missing]
    cmap = map_channels(stream, BIOSEMI)
    assert cmap.interpolated == tuple(missing) and cmap.method == "interpolation"
    assert cmap.model_montage == "biosemi128"
    x = rng.standard_normal((200, 128)) * 1e-5
    raw = mne.io.RawArray(x.T.copy(), mne.create_info(BIOSEMI, 1000.0, "eeg"), verbose=False)
    raw.set_montage("biosemi128", verbose=False)
    raw.info["bads"] = missing
    raw.interpolate_bads(reset_bads=True, verbose=False)
    expected = raw.get_data().T
    got = cmap.apply(x[:, [BIOSEMI.index(n) for n in stream]])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-10)
    assert "4 interpolated (A5, B12, C30, D7)" in cmap.describe()


# ------------------------------------------------------------------------------------------ bad input
def test_map_naming_unknown_channels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"stream channel\(s\) Nope.*it has Ch1, Ch2"):
        map_channels(["Ch1", "Ch2"], ["Cz", "Pz"], channel_map={"Nope": "Cz"})
    with pytest.raises(ValueError, match=r"model channel\(s\) Qz.*it has Cz, Pz"):
        map_channels(["Ch1", "Ch2"], ["Cz", "Pz"], channel_map={"Ch1": "Qz"})


def test_map_sending_two_stream_channels_to_one() -> None:
    with pytest.raises(ValueError, match=r"2 stream channels \(Ch1, Ch2\) to model channel 'Cz'"):
        map_channels(["Ch1", "Ch2"], ["Cz", "Pz"], channel_map={"Ch1": "Cz", "Ch2": "Cz"})


def test_unknown_montage_name() -> None:
    with pytest.raises(ValueError, match=r"stream_montage='GSN-999'.*get_builtin_montages"):
        map_channels(["E1"], ["Cz"], stream_montage="GSN-999")


def test_too_many_missing_channels() -> None:
    with pytest.raises(ValueError, match=r"13 of the model's 128 channels.*A1, A2.*at most 12.*--channel-map.*"
                                         r"--stream-montage.*--max-interpolated"):
        map_channels(BIOSEMI[13:], BIOSEMI)
    assert len(map_channels(BIOSEMI[12:], BIOSEMI).interpolated) == 12


@pytest.mark.parametrize(("name", "text", "match"), [
    ("a.tsv", "Ch1\tCz\n", r"a.tsv' line 1: the first line must be the header"),
    ("b.tsv", "stream\tmodel\nCh1\tCz\tPz\n", r"b.tsv' line 2: expected '<stream name><TAB><model name>'"),
    ("c.tsv", "stream\tmodel\nCh1 Cz\n", r"c.tsv' line 2"),
    ("d.tsv", "", r"d.tsv': empty"),
    ("e.json", "[[\"Ch1\", \"Cz\"]]", r"e.json': holds a JSON list, not an object"),
    ("f.json", "{\"Ch1\": \"Cz\",\n\"Ch2\" \"Pz\"}", r"f.json': not valid JSON at line 2"),
])
def test_malformed_map_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        map_channels(["Ch1", "Ch2"], ["Cz", "Pz"], channel_map=path)


def test_options_are_checked_at_the_boundary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="channel_map"):
        DecodeOptions("m", channel_map=tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match="max_interpolated=1.5"):
        DecodeOptions("m", max_interpolated=1.5)
    with pytest.raises(TypeError, match="max_interpolated"):
        ChannelMapOptions(max_interpolated="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"n.json: every entry must map a stream channel name"):
        path = tmp_path / "n.json"
        path.write_text('{"Ch1": 3}')
        map_channels(["Ch1"], ["Cz"], channel_map=path)


def test_cli_flags_reach_decode_options(tmp_path: Path) -> None:
    from bci.cli.decode import decode_options
    from bci.cli.main import build_parser

    args = build_parser().parse_args(["live", "--eeg", "X", "--model", str(tmp_path), "--channel-map",
                                      str(EGI_MAP), "--stream-montage", "GSN-HydroCel-128",
                                      "--max-interpolated", "0.2"])
    opts = decode_options(args)
    assert (opts.channel_map, opts.stream_montage, opts.max_interpolated) == (EGI_MAP, "GSN-HydroCel-128", 0.2)
    assert decode_options(build_parser().parse_args(["live", "--eeg", "X", "--model", str(tmp_path)])) \
        .max_interpolated == 0.1


# ------------------------------------------------------------------------------------------ pipeline
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_classes=40).replace(ch_names=list(BIOSEMI),
                                                             preprocessing=PreprocessConfig().to_dict())
    return save_checkpoint(build_model(cfg), tmp_path_factory.mktemp("model") / "ck")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> SessionReader:
    path = tmp_path_factory.mktemp("sess") / "sim.zarr"
    return SessionReader(simulate_to_session(SimulationSpec(name="MapSim", duration=4.0, seed=7), path))


def _decode(session: SessionReader, model_dir: Path, desc: StreamDescription, data: np.ndarray,
            channels: ChannelMapOptions | None = None) -> tuple[list[dict], Pipeline]:
    sink = ListSink()
    pipeline = pipeline_factory(load_encoder(model_dir, device="cpu"), [sink], channels=channels)(desc)
    key = session.find("type=EEG")
    times = session.times(key)
    for first in range(0, len(times), 100):
        pipeline.push_data(data[first:first + 100], times[first:first + 100])
    mt, mv = session.markers(session.marker_keys()[0])
    pipeline.push_markers([str(v) for v in mv], mt)
    return [r for r in sink.records + pipeline.finish() if r["type"] == "window"], pipeline


def test_pipeline_with_a_shuffled_renamed_stream_equals_the_original(session: SessionReader,
                                                                     model_dir: Path) -> None:
    key = session.find("type=EEG")
    desc, data = session.description(key), session.data(key)[:]
    reference, plain = _decode(session, model_dir, desc, data)
    assert plain.channel_map.is_identity and len(reference) >= 3
    order = np.random.default_rng(3).permutation(128)
    names = [f"EEG {BIOSEMI[i].upper()}-Ref" for i in order] + ["Status"]
    renamed = StreamDescription(desc.name, "EEG", desc.source_id, tuple(names), nominal_rate=desc.nominal_rate)
    shuffled = np.concatenate([data[:, order], np.zeros((len(data), 1), np.float32)], axis=1)
    got, pipeline = _decode(session, model_dir, renamed, shuffled)
    assert pipeline.ch_names == names and pipeline.channel_map.dropped == ("Status",)
    assert [r["marker"] for r in got] == [r["marker"] for r in reference]
    np.testing.assert_allclose([r["embedding"] for r in got], [r["embedding"] for r in reference], atol=1e-5)


def test_pipeline_refuses_a_map_of_another_stream(model_dir: Path) -> None:
    cmap = map_channels(list(BIOSEMI), BIOSEMI)
    with pytest.raises(ValueError, match="channel_map was built for stream channels"):
        Pipeline(load_encoder(model_dir, device="cpu"), sfreq=1000.0, ch_names=[f"E{i}" for i in range(128)],
                 channel_map=cmap)
    with pytest.raises(TypeError, match="channel_map must be a ChannelMap"):
        Pipeline(load_encoder(model_dir, device="cpu"), sfreq=1000.0, ch_names=list(BIOSEMI),
                 channel_map={"A1": "A1"})  # type: ignore[arg-type]


def test_live_decodes_an_independent_egi_named_amplifier(session: SessionReader, model_dir: Path, tmp_path: Path,
                                                         unique_name: str) -> None:
    """An amplifier process (pylsl + numpy only) sends E1..E128 + TRIG; bci live maps it with the shipped
    TSV and gives the windows and embeddings of the same data decoded under the original names."""
    key = session.find("type=EEG")
    desc, data, times = session.description(key), session.data(key)[:], session.times(key)[:]
    reference, _ = _decode(session, model_dir, desc, data)
    mt, mv = session.markers(session.marker_keys()[0])
    served = {r["marker"] for r in reference}
    keep = [i for i, v in enumerate(mv) if str(v) in served]
    assert len(keep) >= 3
    trig = np.zeros((len(data), 1), np.float32)
    npz = tmp_path / "amp.npz"
    np.savez(npz, data=np.concatenate([data, trig], axis=1), times=times,
             names=np.array([f"E{i}" for i in range(1, 129)] + ["TRIG"]),
             marker_times=np.asarray(mt)[keep], marker_values=np.array([str(mv[i]) for i in keep]))
    amp = subprocess.Popen([sys.executable, "-u", str(REPO / "tests" / "lsl_amplifier_producer.py"), "--name",
                            unique_name, "--data", str(npz), "--rate", str(desc.nominal_rate)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "events.jsonl"
    said: list[str] = []
    try:
        assert amp.stdout.readline().startswith("ready")
        options = LiveOptions(unique_name, unique_name + "-Markers",
                              DecodeOptions(model_dir, events=events, device="cpu", results_stream="",
                                            channel_map=EGI_MAP),
                              duration=float(times[-1] - times[0]) + 4.0, resolve_timeout=15)
        result = run_live(options, say=said.append, warn=said.append)
        out, err = amp.communicate(timeout=30)
        assert amp.returncode == 0, err
    finally:
        if amp.poll() is None:
            amp.kill()
            amp.communicate()
    assert any("128 via file" in s and "dropped 1 stream channel(s): TRIG" in s for s in said)
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    header = lines[0]
    assert header["type"] == "header" and header["channel_map"]["dropped"] == ["TRIG"]
    assert header["channel_map"]["pairs"][0] == ["E1", "A1"]
    live = [x for x in lines if x["type"] == "window"]
    assert not [x for x in lines if x["type"] == "dropped"]
    ref = {r["marker"]: r for r in reference}
    assert sorted(x["marker"] for x in live) == sorted(str(mv[i]) for i in keep)  # every marker gave a window
    assert [x["window_start_index"] for x in live] == [ref[x["marker"]]["window_start_index"] for x in live]
    np.testing.assert_allclose([x["embedding"] for x in live], [ref[x["marker"]]["embedding"] for x in live],
                               atol=1e-5)
    assert result.runtime.pipeline.channel_map.counts()["file"] == 128


def test_epochs_map_a_renamed_session_as_live_does(session: SessionReader, model_dir: Path, tmp_path: Path) -> None:
    """``bci epochs --model`` maps the channels with the same map: renamed + shuffled sessions give the same epochs."""
    from offline.data.build import WindowOptions, epochs_from_sessions
    from offline.data.epochs import EpochDataset
    from streams.session import SessionWriter

    key, mkey = session.find("type=EEG"), session.marker_keys()[0]
    desc, data, times = session.description(key), session.data(key)[:], session.times(key)[:]
    order = np.random.default_rng(5).permutation(128)
    names = tuple(f"EEG {BIOSEMI[i]}-Ref" for i in order) + ("TRIG",)
    renamed = tmp_path / "renamed.zarr"
    keep = {k: v for k, v in session.attrs.items() if k in ("synthetic", "simulation", "session", "subject", "source")}
    with SessionWriter(renamed, attrs=keep) as writer:
        k = writer.add_stream(StreamDescription(desc.name, "EEG", desc.source_id, names, nominal_rate=desc.nominal_rate))
        m = writer.add_stream(session.description(mkey))
        writer.append(k, np.concatenate([data[:, order], np.zeros((len(data), 1), np.float32)], axis=1), times)
        mt, mv = session.markers(mkey)
        writer.append(m, np.array([[str(v)] for v in mv], dtype=object), mt)
    a = epochs_from_sessions([session.path], tmp_path / "a.zarr", WindowOptions(model=model_dir), splits=())
    b = epochs_from_sessions([renamed], tmp_path / "b.zarr",
                             WindowOptions(model=model_dir, channels=ChannelMapOptions()), splits=())
    da, db = EpochDataset.open(a.path), EpochDataset.open(b.path)
    assert a.n_epochs == b.n_epochs >= 2 and list(db.ch_names) == list(BIOSEMI)
    np.testing.assert_allclose(db.data[:], da.data[:], atol=1e-6)
    with pytest.raises(ValueError, match="pass the model too"):
        WindowOptions(channels=ChannelMapOptions(channel_map=EGI_MAP))
