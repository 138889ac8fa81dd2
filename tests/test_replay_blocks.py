"""``decode_session`` reads the session block by block (constant memory) and decodes exactly as from whole arrays.

A real simulated session on disk; the block length is shortened so that blocks, the decoder's
chunks and the store's chunks all fall at different samples.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bci.models.checkpoint import save_checkpoint
from bci.models.registry import build_model, default_config
from bci.preprocessing import PreprocessConfig
from bci.runtime import replay
from bci.runtime.assemble import load_encoder, pipeline_factory
from bci.runtime.sinks import ListSink
from streams.errors import DamagedChunkError
from streams.session import SessionReader
from streams.simulate import SimulationSpec, simulate_to_session


@pytest.fixture(scope="module")
def session_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_to_session(SimulationSpec(name="BlockSim", duration=8.0, seed=5),
                               tmp_path_factory.mktemp("blocks") / "s.zarr")


def _decode(path: Path, model: Path) -> list[dict]:
    session = SessionReader(path)
    key = session.find("type=EEG")
    sink = ListSink()
    pipeline = pipeline_factory(load_encoder(model, device="cpu"), [sink])(session.description(key))
    replay.decode_session(session, pipeline, data_key=key, marker_key=session.marker_keys()[0], chunk_size=130)
    return [{k: v for k, v in r.items() if k not in ("emitted_time", "latency_ms", "marker_lateness_ms")}
            for r in sink.records]


def test_block_by_block_decoding_gives_the_records_of_whole_arrays(session_path: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = default_config("eeg_convnet", n_classes=40).replace(preprocessing=PreprocessConfig().to_dict())
    model = save_checkpoint(build_model(cfg), tmp_path / "ck")
    monkeypatch.setattr(replay, "READ_BLOCK_S", 1e9)  # one block: the whole session, as before
    whole = _decode(session_path, model)
    reads: list[tuple[int, int]] = []
    data_rows = SessionReader.data_rows

    def counting(self: SessionReader, key: str, start: int, stop: int) -> np.ndarray:
        reads.append((start, stop))
        return data_rows(self, key, start, stop)

    monkeypatch.setattr(SessionReader, "data_rows", counting)
    monkeypatch.setattr(replay, "READ_BLOCK_S", 0.77)  # 770 samples: across decoder chunks and store chunks
    blocks = _decode(session_path, model)
    assert len(reads) > 8 and max(b - a for a, b in reads) <= 770 + 130  # never more than a block and a chunk
    assert reads[0][0] == 0 and reads[-1][1] == SessionReader(session_path).n_samples("BlockSim")
    assert len(blocks) == len(whole) > 5
    assert blocks == whole  # every record, every embedding value


def test_data_rows_reads_a_slice_and_names_a_damaged_chunk_only_when_it_is_read(session_path: Path,
                                                                                tmp_path: Path) -> None:
    path = Path(shutil.copytree(session_path, tmp_path / "damaged.zarr"))
    reader = SessionReader(path)
    whole = reader.data("BlockSim")
    np.testing.assert_array_equal(reader.data_rows("BlockSim", 1500, 2700), whole[1500:2700])
    (path / "streams" / "BlockSim" / "data" / "c" / "5" / "0").unlink()  # chunk 5: samples 5000-5999
    reader = SessionReader(path)
    np.testing.assert_array_equal(reader.data_rows("BlockSim", 0, 5000), whole[:5000])  # before it: fine
    with pytest.raises(DamagedChunkError, match=r"chunk 5 \(samples 5000-5999"):
        reader.data_rows("BlockSim", 4990, 5010)
    with pytest.raises(ValueError, match=r"rows \[10, 5\)"):
        reader.data_rows("BlockSim", 10, 5)
    with pytest.raises(ValueError, match="8000"):
        reader.data_rows("BlockSim", 0, 8001)
    with pytest.raises(ValueError, match="skip_damaged"):
        SessionReader(path, skip_damaged=True).data_rows("BlockSim", 0, 10)
