"""Writers of small files in the real public formats, for tests/test_importers*.py.

* :func:`write_xdf`: a minimal XDF 1.0 writer following the specification
  (https://github.com/sccn/xdf/wiki/Specifications): magic ``XDF:``, then chunks
  ``[NumLengthBytes][Length][Tag uint16][Content]`` -- FileHeader (1),
  StreamHeader (2), Samples (3), ClockOffset (4), Boundary (5), StreamFooter (6).
* :func:`write_eeg_imagenet`: a ``.pth`` in the layout of Spampinato et al. (torch.save).
* :func:`write_things`: THINGS-EEG2 preprocessed ``.npy`` (np.save of a dict).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

_XDF_FORMATS = {"float32": "<f4", "double64": "<f8", "int8": "<i1", "int16": "<i2", "int32": "<i4", "int64": "<i8"}
BOUNDARY_UUID = bytes([0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E,
                       0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4])


@dataclass
class XdfStream:
    """One stream to write: header fields, samples (n, ch) or list of str rows, timestamps."""

    stream_id: int
    name: str
    type: str
    channel_format: str
    nominal_srate: float
    samples: object
    timestamps: np.ndarray
    labels: list[str] | None = None
    units: list[str] | None = None
    source_id: str = ""
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)

    @property
    def channel_count(self) -> int:
        if self.channel_format == "string":
            return len(self.samples[0])
        return int(np.asarray(self.samples).shape[1])


def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + struct.pack("<B", n)
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _header_xml(s: XdfStream) -> bytes:
    chans = ""
    if s.labels is not None:
        units = s.units or [""] * len(s.labels)
        chans = "<channels>" + "".join(
            f"<channel><label>{escape(lab)}</label><unit>{escape(u)}</unit><type>{escape(s.type)}</type></channel>"
            for lab, u in zip(s.labels, units)) + "</channels>"
    xml = (f"<?xml version=\"1.0\"?><info><name>{escape(s.name)}</name><type>{escape(s.type)}</type>"
           f"<channel_count>{s.channel_count}</channel_count><nominal_srate>{s.nominal_srate}</nominal_srate>"
           f"<channel_format>{s.channel_format}</channel_format><source_id>{escape(s.source_id)}</source_id>"
           f"<version>1.1</version><created_at>0</created_at><uid>uid-{s.stream_id}</uid>"
           f"<hostname>testhost</hostname><desc>{chans}</desc></info>")
    return xml.encode()


def _samples_chunk(s: XdfStream, start: int, stop: int) -> bytes:
    out = bytearray(struct.pack("<I", s.stream_id))
    out += b"\x04" + struct.pack("<I", stop - start)
    for k in range(start, stop):
        out += b"\x08" + struct.pack("<d", float(s.timestamps[k]))
        if s.channel_format == "string":
            for value in s.samples[k]:
                raw = value.encode("utf-8")
                out += _varlen(len(raw)) + raw
        else:
            out += np.asarray(s.samples[k], dtype=_XDF_FORMATS[s.channel_format]).tobytes()
    return bytes(out)


def write_xdf(path: Path, streams: list[XdfStream], chunk: int = 50) -> Path:
    """Write ``streams`` to ``path`` as XDF: header, interleaved sample chunks, clock offsets, footers."""
    buf = bytearray(b"XDF:")
    buf += _chunk(1, b"<?xml version=\"1.0\"?><info><version>1.0</version><datetime>2024-01-01</datetime></info>")
    for s in streams:
        buf += _chunk(2, struct.pack("<I", s.stream_id) + _header_xml(s))
    n_max = max(len(s.timestamps) for s in streams)
    for start in range(0, n_max, chunk):
        for s in streams:
            stop = min(len(s.timestamps), start + chunk)
            if start < stop:
                buf += _chunk(3, _samples_chunk(s, start, stop))
    buf += _chunk(5, BOUNDARY_UUID)
    for s in streams:
        for t, offset in s.clock_offsets:
            buf += _chunk(4, struct.pack("<I", s.stream_id) + struct.pack("<dd", t, offset))
    for s in streams:
        ts = s.timestamps
        xml = (f"<?xml version=\"1.0\"?><info><first_timestamp>{ts[0] if len(ts) else 0}</first_timestamp>"
               f"<last_timestamp>{ts[-1] if len(ts) else 0}</last_timestamp>"
               f"<sample_count>{len(ts)}</sample_count></info>")
        buf += _chunk(6, struct.pack("<I", s.stream_id) + xml.encode())
    path.write_bytes(bytes(buf))
    return path


# --------------------------------------------------------------------------- EEG-ImageNet
def eeg_imagenet_content(n_subjects: int = 3, n_classes: int = 4, per_class: int = 3, n_channels: int = 8,
                         length: int = 500, seed: int = 0) -> dict:
    """A dict in the EEG-ImageNet layout: subjects see each class in one block of ``per_class`` images."""
    import torch

    rng = np.random.default_rng(seed)
    labels = [f"n{1000000 + c:08d}" for c in range(n_classes)]
    images = [f"{labels[c]}_{k + 1}" for c in range(n_classes) for k in range(per_class)]
    dataset = []
    for s in range(1, n_subjects + 1):
        for c in range(n_classes):
            for k in range(per_class):
                eeg = torch.from_numpy(rng.normal(size=(n_channels, length + int(rng.integers(0, 20)))).astype(np.float32))
                dataset.append({"eeg": eeg, "image": c * per_class + k, "label": c, "subject": s})
    return {"dataset": dataset, "labels": labels, "images": images}


def write_eeg_imagenet(path: Path, content: dict | None = None, **kw) -> Path:
    """``torch.save`` a dict in the EEG-ImageNet layout."""
    import torch

    torch.save(eeg_imagenet_content(**kw) if content is None else content, path)
    return path


def write_splits(path: Path, n: int, n_splits: int = 6, seed: int = 0) -> Path:
    """A splits file like the published one: random (block-ignoring) 80/10/10 splits of ``range(n)``."""
    import torch

    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        perm = rng.permutation(n).tolist()
        a, b = int(0.8 * n), int(0.9 * n)
        splits.append({"train": perm[:a], "val": perm[a:b], "test": perm[b:]})
    torch.save({"splits": splits}, path)
    return path


# --------------------------------------------------------------------------- THINGS-EEG2
def things_content(n_images: int, n_reps: int, n_channels: int = 5, n_times: int = 20, seed: int = 0) -> dict:
    """A dict like a THINGS-EEG2 preprocessed file (100 Hz, from -0.2 s)."""
    rng = np.random.default_rng(seed)
    return {
        "preprocessed_eeg_data": rng.normal(size=(n_images, n_reps, n_channels, n_times)),
        "ch_names": [f"P{i}" for i in range(n_channels)],
        "times": np.round(-0.2 + np.arange(n_times) / 100.0, 2),
    }


def write_things(path: Path, content: dict) -> Path:
    """``np.save`` a dict (pickled), as the THINGS-EEG2 preprocessing scripts do."""
    np.save(path, content, allow_pickle=True)
    return path
