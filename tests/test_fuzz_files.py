"""Fuzzing every file loader with hypothesis (issue 18, part 4).

Property, for every target: the loader either succeeds or raises a clear error -- a ``ValueError``,
``TypeError`` or ``OSError`` (project errors subclass them) defined by Python itself or by this project,
with a non-empty message -- never a ``KeyError``/``IndexError``/``AttributeError``, a zarr/numpy/torch
internal, a ``RecursionError``/``MemoryError`` or a hang (:func:`assert_clear_error`); and no file is
written outside the output folder (:func:`outside_listing` before and after). Every example works in a
fresh folder (``tempfile``), built on a valid seed file so that the fuzzer gets past the first check.

The number of examples is the hypothesis profile's (``tests/conftest.py``: "ci" 30, "long" 2000 with
``HYPOTHESIS_PROFILE=long``); ``pytest --hypothesis-show-statistics`` prints the cases run per target.
Each target also has a CLI case through ``bci.cli.main.main``: exit status 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import resource
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bci.cli.main import main as bci_main
from tests.importer_files import XdfStream, eeg_imagenet_content, things_content, write_things, write_xdf

PROJECT_PACKAGES = ("streams", "bci", "offline")
ALLOWED = (ValueError, TypeError, OSError)
#: Seconds one example may take before it counts as a hang.
EXAMPLE_TIMEOUT_S = 20.0
#: Address space an example may add to the process (a loader that trusts a size field must not allocate it).
EXTRA_MEMORY_BYTES = 3 * 1024**3


# --------------------------------------------------------------------------- the property
class Hang(BaseException):
    """Raised by the alarm when one example runs past :data:`EXAMPLE_TIMEOUT_S` (a BaseException, so that no
    ``except Exception`` in a loader swallows it)."""


def _clear_type(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, ALLOWED) and (module == "builtins" or module in PROJECT_PACKAGES)


@contextlib.contextmanager
def _bounded() -> Iterator[None]:
    """At most :data:`EXAMPLE_TIMEOUT_S` seconds and :data:`EXTRA_MEMORY_BYTES` more address space."""
    import psutil

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {EXAMPLE_TIMEOUT_S} s")

    old_handler = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = psutil.Process().memory_info().vms + EXTRA_MEMORY_BYTES
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, EXAMPLE_TIMEOUT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def assert_clear_error(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call``: success (None) or a clear error (returned); anything else fails the test.

    A clear error is a ``ValueError``, ``TypeError`` or ``OSError`` (or a subclass) defined by Python or
    by this project (``streams``, ``bci``, ``offline``), with a non-empty message. A ``KeyError``,
    ``IndexError``, ``AttributeError``, a third-party library's own exception, ``RecursionError``,
    ``MemoryError`` or a hang (:data:`EXAMPLE_TIMEOUT_S`) fails.
    """
    try:
        with _bounded():
            call()
    except BaseException as exc:  # noqa: BLE001 - judging every exception is the point
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if not _clear_type(exc):
            raise AssertionError(f"unclear error {type(exc).__module__}.{type(exc).__qualname__}: {exc}") from exc
        if not str(exc).strip():
            raise AssertionError(f"{type(exc).__qualname__} without a message") from exc
        return exc
    return None


def outside_listing(base: Path, out: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``base`` except ``out`` and what is inside it: relative name -> (size, mtime)."""
    listing = {}
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d != out]
        for name in dirnames + filenames:
            p = here / name
            if p == out:
                continue
            st_ = p.lstat()
            listing[p.relative_to(base).as_posix()] = (st_.st_size, st_.st_mtime_ns)
    return listing


@contextlib.contextmanager
def example_dir() -> Iterator[Path]:
    """A fresh folder for one example (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_loader(base: Path, out: Path, call: Callable[[], Any]) -> BaseException | None:
    """:func:`assert_clear_error` on ``call``, and nothing written under ``base`` outside ``out``."""
    before = outside_listing(base, out)
    result = assert_clear_error(call)
    after = outside_listing(base, out)
    assert after == before, f"files written or changed outside {out}: {sorted(set(after.items()) ^ set(before.items()))}"
    return result


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``bci ARGV``: exit status 2 and exactly one line on stderr (returned)."""
    capsys.readouterr()
    code = bci_main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, f"bci {argv} returned {code}; stderr: {err}"
    assert len(lines) == 1 and ": error: " in lines[0], err
    return lines[0]


# --------------------------------------------------------------------------- mutations
#: Values that confuse types and sizes: what a damaged or hand-edited file holds most often.
HOSTILE = st.sampled_from([None, True, 0, -1, 2**31, 2**63, 1e308, -0.0, "", "x", "\x00", "../x", [], [None], {},
                           {"a": 1}, [[1, 2], [3]], "NaN"]).map(copy.deepcopy)  # a fresh list each draw: no cycles
JSON_LEAF = (HOSTILE | st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            yield from _paths(v, prefix + (i,))


@st.composite
def json_mutation(draw: st.DrawFn, seed: Any, max_edits: int = 3) -> Any:
    """``seed`` with 1..``max_edits`` edits: a value replaced, a key/element deleted, or a key added."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        path = draw(st.sampled_from(sorted(_paths(doc), key=repr)))
        op = draw(st.sampled_from(("replace", "delete", "insert")))
        if not path:
            if op == "replace":
                doc = draw(JSON_VALUE)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if op == "replace":
            parent[last] = draw(JSON_VALUE)
        elif op == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON_VALUE)
        else:
            parent.insert(last, draw(JSON_VALUE))
    return doc


@st.composite
def byte_mutation(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with 1..4 patches (bytes written at offsets), perhaps truncated."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        data[at:at + len(patch)] = patch
    if draw(st.booleans()) and draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def _mutate_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- checkpoint config.json + safetensors
@pytest.fixture(scope="module")
def checkpoint_seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two valid checkpoints: with every optional field (channel names, scaler, labels), and bare."""
    from bci.models.checkpoint import save_checkpoint
    from bci.models.registry import build_model, default_config

    full = default_config("fmri_mlp", n_chans=3, embed_dim=4, n_classes=2, ch_names=["a", "b", "c"],
                          labels=["x", "y"], scaler={"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
                          params={"hidden": [8], "dropout": 0.1}, extra={"data": {"window": {"offset": 4.0}}})
    bare = default_config("fmri_mlp", n_chans=3, embed_dim=4, params={"hidden": [8]})
    root = tmp_path_factory.mktemp("ckpt")
    return [save_checkpoint(build_model(c), root / name) for name, c in (("full", full), ("bare", bare))]


@st.composite
def _checkpoint_cases(draw: st.DrawFn, seeds: list[Path]) -> tuple[Path, str, Any]:
    seed = draw(st.sampled_from(seeds))
    if draw(st.booleans()):
        return seed, "config", draw(json_mutation(json.loads((seed / "config.json").read_text(encoding="utf-8"))))
    return seed, "weights", draw(byte_mutation((seed / "model.safetensors").read_bytes()))


@given(data=st.data())
def test_fuzz_checkpoint(checkpoint_seeds: list[Path], data: st.DataObject) -> None:
    from bci.models.checkpoint import load_checkpoint

    seed, kind, value = data.draw(_checkpoint_cases(checkpoint_seeds))
    with example_dir() as base:
        ckpt = base / "model"
        shutil.copytree(seed, ckpt)
        if kind == "config":
            _write_json(ckpt / "config.json", value)
        else:
            _mutate_file(ckpt / "model.safetensors", value)
        check_loader(base, base / "out", lambda: load_checkpoint(ckpt))


def test_fuzz_checkpoint_cli(checkpoint_seeds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "model"
    shutil.copytree(checkpoint_seeds[1], ckpt)
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    _write_json(ckpt / "config.json", {**config, "n_chans": 2**40})  # terabytes, if it were believed
    session = _small_session(tmp_path / "s.zarr")
    line = assert_clear_error(lambda: run_cli(["replay", session, "--decode", "--model", ckpt, "--speed", "max"],
                                              capsys))
    assert line is None


# --------------------------------------------------------------------------- gallery stores
@pytest.fixture(scope="module")
def gallery_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bci.retrieval.gallery import Gallery

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    thumbs = rng.integers(0, 255, size=(3, 2, 2, 3), dtype=np.uint8)
    g = Gallery(embeddings=emb, ids=["a/1", "a/2", "b/1"], labels=["a", "a", "b"], captions=["x", "", "z"],
                thumbnails=thumbs, meta={"clip": "pixel", "source": "image", "name": "seed"})
    return g.save(tmp_path_factory.mktemp("gallery") / "g")


def _gallery_cases(seed: Path) -> st.SearchStrategy[tuple[str, Any]]:
    header = json.loads((seed / "gallery.json").read_text(encoding="utf-8"))
    arrays = (seed / "arrays.npz").read_bytes()
    return st.one_of(st.tuples(st.just("json"), json_mutation(header)),
                     st.tuples(st.just("arrays"), byte_mutation(arrays)))


@given(data=st.data())
def test_fuzz_gallery(gallery_seed: Path, data: st.DataObject) -> None:
    from bci.retrieval.gallery import Gallery

    kind, value = data.draw(_gallery_cases(gallery_seed))
    with example_dir() as base:
        g = base / "g"
        shutil.copytree(gallery_seed, g)
        if kind == "json":
            _write_json(g / "gallery.json", value)
        else:
            _mutate_file(g / "arrays.npz", value)
        check_loader(base, base / "out", lambda: Gallery.load(g))


def test_fuzz_gallery_cli(gallery_seed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = tmp_path / "g"
    shutil.copytree(gallery_seed, g)
    header = json.loads((g / "gallery.json").read_text(encoding="utf-8"))
    _write_json(g / "gallery.json", {**header, "ids": [1, 2, 3]})
    assert "gallery" in run_cli(["gallery", "info", g], capsys)
    shutil.copy(gallery_seed / "gallery.json", g / "gallery.json")
    arrays = bytearray((g / "arrays.npz").read_bytes())
    central = arrays.index(b"PK\x01\x02")  # the first central-directory entry: flag bit 0 = encrypted
    arrays[central + 8] |= 1
    (g / "arrays.npz").write_bytes(bytes(arrays))
    assert "arrays.npz" in run_cli(["gallery", "info", g], capsys)


# --------------------------------------------------------------------------- session attributes
def _small_session(path: Path) -> Path:
    from streams.description import StreamDescription
    from streams.session import SessionWriter

    t = 10.0 + np.arange(50) / 100.0
    with SessionWriter(path, attrs={"subject": "S01"}) as w:
        eeg = w.add_stream(StreamDescription("EEG", "EEG", "src", ("Cz", "Pz"), channel_units=("uV", "uV"),
                                             nominal_rate=100.0))
        w.append(eeg, np.zeros((50, 2), np.float32), t)
        w.add_gap(eeg, 10.2, 10.25, "test gap")
        mk = w.add_stream(StreamDescription("M", "Markers", "m", ("marker",), dtype="string"))
        w.append(mk, np.array([["stim/img1/dog"], ["stim/img2/cat"]], dtype=object), np.array([10.1, 10.3]))
    return path


@pytest.fixture(scope="module")
def session_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_session(tmp_path_factory.mktemp("session") / "s.zarr")


def _attr_files(store: Path) -> list[str]:
    """The zarr.json files of the root and of every stream group (relative paths)."""
    return ["zarr.json"] + sorted(p.relative_to(store).as_posix() for p in (store / "streams").glob("*/zarr.json"))


def _read_session(path: Path) -> None:
    from streams.session import SessionReader

    reader = SessionReader(path)
    _ = reader.attrs, reader.complete
    for key in reader.streams:
        reader.description(key), reader.n_samples(key), reader.times(key), reader.data(key)
        reader.gaps(key), reader.stream_attrs(key)
    if reader.marker_keys():
        reader.markers()


@given(data=st.data())
def test_fuzz_session_attrs(session_seed: Path, data: st.DataObject) -> None:
    files = _attr_files(session_seed)
    name = data.draw(st.sampled_from(files), label="zarr.json")
    meta = json.loads((session_seed / name).read_text(encoding="utf-8"))
    attrs = data.draw(json_mutation(meta.get("attributes", {})), label="attributes")
    with example_dir() as base:
        store = base / "s.zarr"
        shutil.copytree(session_seed, store)
        _write_json(store / name, {**meta, "attributes": attrs})
        check_loader(base, base / "out", lambda: _read_session(store))


def test_fuzz_session_attrs_cli(session_seed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(session_seed, store)
    name = _attr_files(store)[1]
    meta = json.loads((store / name).read_text(encoding="utf-8"))
    meta["attributes"]["gaps"] = ["not a gap"]
    _write_json(store / name, meta)
    assert "gap" in run_cli(["info", store], capsys)


# --------------------------------------------------------------------------- XDF
def _xdf_streams() -> list[XdfStream]:
    rng = np.random.default_rng(1)
    t = 100.0 + np.arange(40) / 100.0
    return [XdfStream(1, "EEG", "EEG", "float32", 100.0, rng.normal(size=(40, 2)).astype(np.float32), t,
                      labels=["Cz", "Pz"], units=["uV", "uV"], clock_offsets=[(100.0, 0.01), (100.4, 0.01)]),
            XdfStream(2, "M", "Markers", "string", 0.0, [["stim/img1/dog"], ["stim/img2/cat"]],
                      np.array([100.1, 100.3]))]


@st.composite
def _xdf_header_case(draw: st.DrawFn) -> bytes:
    """A valid file whose EEG StreamHeader has fuzzed channel_count / nominal_srate / channel_format."""
    from tests.importer_files import _chunk, _header_xml, _samples_chunk

    eeg, markers = _xdf_streams()
    xml = _header_xml(eeg).decode()
    counts = st.sampled_from([0, 100_001, 2**40]) | st.integers(-3, 2**40)
    fields = {"channel_count": counts.map(str) | st.text(max_size=6),
              "nominal_srate": st.floats(allow_nan=True).map(repr) | st.text(max_size=6),
              "channel_format": st.sampled_from(["float32", "double64", "string", "int8", "int64", "float16"])}
    for name in draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True)):
        start, stop = xml.index(f"<{name}>") + len(name) + 2, xml.index(f"</{name}>")
        xml = xml[:start] + draw(fields[name]).replace("<", "").replace("&", "") + xml[stop:]
    buf = bytearray(b"XDF:") + _chunk(1, b"<?xml version=\"1.0\"?><info><version>1.0</version></info>")
    buf += _chunk(2, (1).to_bytes(4, "little") + xml.encode())
    buf += _chunk(2, (2).to_bytes(4, "little") + _header_xml(markers))
    if draw(st.booleans()):
        buf += _chunk(3, _samples_chunk(eeg, 0, len(eeg.timestamps)))
    buf += _chunk(3, _samples_chunk(markers, 0, 2))
    return bytes(buf)


@pytest.fixture(scope="module")
def xdf_seed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_xdf(tmp_path_factory.mktemp("xdf") / "rec.xdf", _xdf_streams(), chunk=10).read_bytes()


@given(data=st.data(), allow_damaged=st.booleans())
def test_fuzz_xdf(xdf_seed: bytes, data: st.DataObject, allow_damaged: bool) -> None:
    from offline.importers.xdf import import_xdf

    content = data.draw(byte_mutation(xdf_seed) | _xdf_header_case())
    with example_dir() as base:
        src = _mutate_file(base / "rec.xdf", content)
        check_loader(base, base / "out", lambda: import_xdf(src, base / "out", allow_damaged=allow_damaged))


def test_fuzz_xdf_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xdf = write_xdf(tmp_path / "rec.xdf", _xdf_streams(), chunk=10)
    xdf.write_bytes(xdf.read_bytes()[:-40])
    assert "rec.xdf" in run_cli(["import", "xdf", xdf, tmp_path / "out"], capsys)


# --------------------------------------------------------------------------- EDF / FIF (raw importer)
def _raw_for_files() -> Any:
    import mne

    rng = np.random.default_rng(2)
    x = rng.normal(scale=1e-5, size=(3, 200))
    x[2] = 0.0
    x[2, 50:52] = 5
    info = mne.create_info(["Fz", "Cz", "STI"], 100.0, ["eeg", "eeg", "stim"])
    raw = mne.io.RawArray(x, info, verbose="error")
    raw.set_annotations(mne.Annotations([0.5], [0.1], ["cat"]))
    return raw


@pytest.fixture(scope="module")
def raw_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    import mne

    pytest.importorskip("edfio")
    root = tmp_path_factory.mktemp("raw")
    raw = _raw_for_files()
    raw.save(root / "rec_raw.fif", verbose="error")
    mne.export.export_raw(root / "rec.edf", raw.copy().pick(["Fz", "Cz"]), verbose="error")
    return {name: (root / name).read_bytes() for name in ("rec_raw.fif", "rec.edf")}


@given(data=st.data())
def test_fuzz_raw(raw_seeds: dict[str, bytes], data: st.DataObject) -> None:
    from offline.importers.raw import import_raw

    name = data.draw(st.sampled_from(sorted(raw_seeds)), label="file")
    content = data.draw(byte_mutation(raw_seeds[name]), label="content")
    with example_dir() as base:
        src = _mutate_file(base / name, content)
        check_loader(base, base / "out", lambda: import_raw(src, base / "out"))


def test_fuzz_raw_cli(raw_seeds: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _mutate_file(tmp_path / "rec.edf", raw_seeds["rec.edf"][:300])
    assert "rec.edf" in run_cli(["import", "raw", src, tmp_path / "out"], capsys)


# --------------------------------------------------------------------------- EEG-ImageNet .pth
class _Payload:
    """Unpickling this would create a folder: proof that a refused pickle ran nothing."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.path,)


def _torch_value(base_hint: str) -> st.SearchStrategy[Any]:
    import torch

    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
    dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool])
    tensors = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype), shapes, dtypes)
    return (JSON_VALUE | tensors | st.builds(lambda s: np.zeros(s), shapes)
            | st.just(None).map(lambda _: _Payload(base_hint)))


@st.composite
def _eeg_imagenet_case(draw: st.DrawFn, marker: str) -> Any:
    """The EEG-ImageNet layout with 1..3 values replaced by JSON, tensors, numpy arrays or a code payload."""
    content = eeg_imagenet_content(n_subjects=1, n_classes=2, per_class=2, n_channels=2, length=30)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(sorted(_paths(content), key=repr)))
        if not path:
            continue
        parent = content
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(_torch_value(marker))
    return content


@given(data=st.data())
def test_fuzz_eeg_imagenet(data: st.DataObject) -> None:
    import torch

    from offline.importers.eeg_imagenet import import_eeg_imagenet

    with example_dir() as base:
        marker = str(base / "payload-ran")
        src = base / "eeg.pth"
        if data.draw(st.booleans(), label="structure"):
            torch.save(data.draw(_eeg_imagenet_case(marker), label="content"), src)
        else:
            torch.save(eeg_imagenet_content(n_subjects=1, n_classes=2, per_class=2, n_channels=2, length=30), src)
            _mutate_file(src, data.draw(byte_mutation(src.read_bytes()), label="bytes"))
        check_loader(base, base / "out", lambda: import_eeg_imagenet(src, base / "out", time_slice="0:20"))
        assert not Path(marker).exists()


def test_fuzz_eeg_imagenet_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    content = eeg_imagenet_content(n_subjects=1, n_classes=2, per_class=2, n_channels=2, length=30)
    content["dataset"][0]["eeg"] = _Payload(str(tmp_path / "payload-ran"))
    torch.save(content, tmp_path / "eeg.pth")
    line = run_cli(["import", "eeg-imagenet", tmp_path / "eeg.pth", tmp_path / "out", "--time-slice", "0:20"], capsys)
    assert "refused" in line and not (tmp_path / "payload-ran").exists()


# --------------------------------------------------------------------------- THINGS-EEG2 .npy
def _things_pair() -> tuple[dict, dict]:
    return things_content(4, 2, n_channels=3, n_times=5, seed=1), things_content(2, 2, n_channels=3, n_times=5, seed=2)


def _numpy_value() -> st.SearchStrategy[Any]:
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple)
    dtypes = st.sampled_from(["float32", "float64", "int16", "uint8", "bool", "complex64", "U3", "object"])
    arrays = st.builds(lambda shape, dtype: np.zeros(shape, dtype=dtype), shapes, dtypes)
    return JSON_VALUE | arrays | st.builds(lambda x: np.full((2, 2, 3, 5), x), st.sampled_from([np.nan, np.inf]))


@st.composite
def _things_case(draw: st.DrawFn) -> tuple[str, Any]:
    train, test = _things_pair()
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 2))):
            key = draw(st.sampled_from([*sorted(train), "extra"]))
            if draw(st.booleans()) and key in train:
                del train[key]
            else:
                train[key] = draw(_numpy_value())
        return "content", train
    return "bytes", train


@given(data=st.data())
def test_fuzz_things(data: st.DataObject) -> None:
    from offline.importers.things_eeg2 import import_things_eeg2

    kind, train = data.draw(_things_case(), label="train")
    with example_dir() as base:
        test = write_things(base / "test.npy", _things_pair()[1])
        src = write_things(base / "train.npy", train)
        if kind == "bytes":
            _mutate_file(src, data.draw(byte_mutation(src.read_bytes()), label="bytes"))
        check_loader(base, base / "out", lambda: import_things_eeg2(src, test, base / "out", trust_pickle=True,
                                                                     images_per_concept=2))


def test_fuzz_things_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, test = _things_pair()
    src = write_things(tmp_path / "train.npy", train)
    write_things(tmp_path / "test.npy", test)
    data = bytearray(src.read_bytes())
    data[-30:-20] = b"\xff" * 10
    src.write_bytes(bytes(data))
    line = run_cli(["import", "things-eeg2", src, tmp_path / "test.npy", tmp_path / "out", "--trust-pickle",
                    "--images-per-concept", "2"], capsys)
    assert "train.npy" in line


# --------------------------------------------------------------------------- labels.csv and image folders
#: Ids and names that try to leave the folder, or break naive path handling.
ESCAPING_NAMES = st.sampled_from(["../x", "../outside/secret", "/etc/passwd", "a/../../x", "a\x00b", "x" * 300,
                                  "a/1", "./a/1", "a//1", "\\..\\x", "~/x", "a/1.png", ""]) | st.text(max_size=20)


def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    for rel in ("a/1.png", "a/2.png", "b/1.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)).save(root / rel)
    (root / "labels.csv").write_text("id,label,caption\na/1,alpha,a first\nb/1,beta,\n", encoding="utf-8")
    return root


@st.composite
def _labels_case(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """labels.csv content (rows with escaping ids, or the valid file byte-mutated) and the symlinks to add."""
    if draw(st.booleans()):
        header = draw(st.sampled_from(["id,label,caption", "id,label", "id,caption", "label,id", "x,y", ""]))
        rows = draw(st.lists(st.tuples(ESCAPING_NAMES, st.text(max_size=10)), max_size=4))
        text = header + "\n" + "".join(f"{i},{lab}\n" for i, lab in rows)
        content = text.encode("utf-8", "surrogatepass")
    else:
        content = draw(byte_mutation(b"id,label,caption\na/1,alpha,a first\nb/1,beta,\n"))
    links = draw(st.lists(st.sampled_from(["file-outside", "dir-outside", "loop", "dangling"]), max_size=2,
                          unique=True))
    return content, links


def _add_links(folder: Path, outside: Path, links: list[str]) -> None:
    targets = {"file-outside": (outside / "secret.png", "evil.png"), "dir-outside": (outside, "elsewhere"),
               "loop": (folder, "a/loop"), "dangling": (outside / "nothing.png", "gone.png")}
    for name in links:
        target, link = targets[name]
        (folder / link).symlink_to(target)


def _load_folder(folder: Path, names: list[str]) -> None:
    from bci.retrieval.gallery import captions_from_folder, images_from_folder
    from offline.importers.images import load_image_folder

    found = images_from_folder(folder, size=8)
    captions_from_folder(folder, found.ids)
    assert all(not i.startswith(("/", "..")) and "/../" not in i for i in found.ids), found.ids
    load_image_folder(folder, names, 8)


@given(case=_labels_case(), names=st.lists(ESCAPING_NAMES, max_size=4))
def test_fuzz_labels_csv(case: tuple[bytes, list[str]], names: list[str]) -> None:
    content, links = case
    with example_dir() as base:
        folder = _image_folder(base / "images")
        outside = base / "outside"
        outside.mkdir()
        (outside / "secret.png").write_bytes((folder / "a/1.png").read_bytes())
        (folder / "labels.csv").write_bytes(content)
        _add_links(folder, outside, links)
        check_loader(base, base / "out", lambda: _load_folder(folder, names))


def test_fuzz_labels_csv_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _image_folder(tmp_path / "images")
    (folder / "labels.csv").write_text("id,label\n../../etc/passwd,x\n", encoding="utf-8")
    line = run_cli(["gallery", "build", folder, tmp_path / "out", "--pattern-grid", "2"], capsys)
    assert "labels.csv" in line and not (tmp_path / "out").exists()
