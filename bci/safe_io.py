"""Safe file I/O shared by every checkpoint format: atomic writes, pickle detection, state-dict fit.

Checkpoints (encoders, CLIP weights, GAN generators, stimulus encoders, training state) are
safetensors + JSON, never pickle. The helpers here are what their readers and writers share
(:func:`write_checkpoint`, :func:`load_module`); each format words its error messages
through a :class:`CheckpointKind`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from streams._checks import check_type

__all__ = ["CONFIG_FILE", "PICKLE_SUFFIXES", "CheckpointError", "CheckpointKind", "StateMismatch", "atomic_write",
           "check_state", "checkpoint_dir", "first_state_mismatch", "has_safetensors_header", "listing",
           "load_module", "load_state", "looks_like_pickle", "pickle_message", "read_json_config",
           "read_json_object", "refuse_if_pickle", "refuse_pickles", "write_checkpoint"]

#: File suffixes of pickle-based weight files (refused by every loader).
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
#: The JSON file that describes a checkpoint directory.
CONFIG_FILE = "config.json"

_M = TypeVar("_M", bound=nn.Module)


class CheckpointError(ValueError):
    """A checkpoint directory cannot be read: missing file, bad format, wrong weights, pickle."""


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary name next to ``path``, then rename it to ``path``.

    A crash leaves either the old file or the new one, never half a file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def looks_like_pickle(path: Path) -> bool:
    """True for pickle streams (protocol >= 2) and zip archives (``torch.save``'s default)."""
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def has_safetensors_header(path: Path) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object.

    Test it before :func:`looks_like_pickle`: a valid header length such as 0x0280 (640)
    starts with the bytes 0x80 0x02, a pickle's magic.
    """
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] + 8 <= path.stat().st_size


def listing(directory: Path, limit: int = 10) -> str:
    """The first ``limit`` file names in ``directory`` (for "files there: ..." messages)."""
    names = sorted(p.name for p in Path(directory).iterdir())
    if not names:
        return "none (empty directory)"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass(frozen=True)
class StateMismatch:
    """The first way a state dict does not fit a module.

    Attributes
    ----------
    kind : {"missing", "shape", "unexpected"}
    key : str
        The tensor's name.
    file_shape : tuple or None
        Its shape in the file (None when missing).
    expected_shape : tuple or None
        The shape the module needs (None when unexpected).
    n_unexpected : int
        How many unexpected tensors the file has (``kind == "unexpected"``).
    """

    kind: str
    key: str
    file_shape: tuple[int, ...] | None
    expected_shape: tuple[int, ...] | None
    n_unexpected: int = 0


def first_state_mismatch(expected: Mapping[str, torch.Tensor],
                         state: Mapping[str, torch.Tensor]) -> StateMismatch | None:
    """Compare a file's tensors with a module's ``state_dict()``: None when every name and shape fits."""
    for key, tensor in expected.items():
        if key not in state:
            return StateMismatch("missing", key, None, tuple(tensor.shape))
        if tuple(state[key].shape) != tuple(tensor.shape):
            return StateMismatch("shape", key, tuple(state[key].shape), tuple(tensor.shape))
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        return StateMismatch("unexpected", unexpected[0], tuple(state[unexpected[0]].shape), None, len(unexpected))
    return None


# ---------------------------------------------------------------------- pickle refusal, config.json
def pickle_message(path: Path, hint: str, what: str = "file") -> str:
    """Why a pickle-based ``what`` (file, checkpoint) is refused, and ``hint`` on how to convert it."""
    return f"refusing to load pickle-based {what} {path}: pickle can execute code; {hint}"


def refuse_pickles(directory: Path, hint: str, what: str = "file") -> None:
    """Raise :class:`CheckpointError` if ``directory`` holds pickle-suffixed files."""
    pickles = sorted(p.name for p in Path(directory).iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(pickle_message(Path(directory) / pickles[0], hint, what))


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; :class:`CheckpointError` for invalid JSON or another JSON type."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_json_config(directory: Path, fmt: str, version: int, hint: str, *, what: str | None = None,
                     fix: str = "") -> dict[str, Any]:
    """Read ``directory/config.json`` and check its ``format`` and ``format_version``.

    Parameters
    ----------
    directory : Path
        The checkpoint directory (checked to exist by the caller).
    fmt : str
        Expected ``format`` tag.
    version : int
        Newest ``format_version`` this runtime reads.
    hint : str
        How to convert a pickle found instead of ``config.json``.
    what : str, optional
        What the directory is, in messages ("checkpoint"); None: a plain file.
    fix : str
        Appended to the wrong-format message (e.g. how to write such checkpoints).
    """
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        refuse_pickles(directory, hint, what or "file")
        prefix = f"{what} " if what else ""
        raise CheckpointError(f"{prefix}{directory} has no {CONFIG_FILE}; files there: {listing(directory)}")
    data = read_json_object(path)
    if data.get("format") != fmt:
        raise CheckpointError(f"{path} has format {data.get('format')!r}, expected {fmt!r}" + (f"; {fix}" if fix else ""))
    found = data.get("format_version")
    if isinstance(found, bool) or not isinstance(found, int):
        raise CheckpointError(f"{path} has format_version {found!r}; expected an integer")
    if found > version:
        raise CheckpointError(
            f"{path} has format_version {found}, newer than this runtime reads ({version}); upgrade bci-runtime"
        )
    return data


# ---------------------------------------------------------------------- config.json + safetensors directories
@dataclass(frozen=True)
class CheckpointKind:
    """How one checkpoint format (a ``config.json`` + safetensors directory) words its errors.

    Attributes
    ----------
    what : str
        What the directory is, in messages ("checkpoint", "saliency generator").
    hint : str
        How to convert a pickle found instead of the safetensors files.
    pickle_what : str
        What a refused pickle is called ("file", "checkpoint").
    layout : str or None
        What the directory holds, said when a file is passed instead (None: its ``config.json``).
    resave : str or None
        Advice after a weights file with a bad safetensors header (None: ``hint``).
    fix : str
        Advice after weights that do not fit the architecture (missing tensor, other shape).
    """

    what: str
    hint: str
    pickle_what: str = "file"
    layout: str | None = None
    resave: str | None = None
    fix: str = "check the config in config.json"


def checkpoint_dir(directory: str | os.PathLike, kind: CheckpointKind) -> Path:
    """``directory`` as a Path; a missing path, a plain file or a pickle file is a :class:`CheckpointError`."""
    check_type(f"{kind.what} directory", directory, (str, os.PathLike), "a path")
    path = Path(directory)
    if not path.exists():
        raise CheckpointError(f"{kind.what} directory {path} does not exist")
    if not path.is_dir():
        if path.suffix.lower() in PICKLE_SUFFIXES or looks_like_pickle(path):
            raise CheckpointError(pickle_message(path, kind.hint, kind.pickle_what))
        layout = kind.layout or f"a {kind.what} checkpoint is a directory with {CONFIG_FILE}"
        raise CheckpointError(f"{kind.what} path {path} is a file; {layout}")
    return path


def write_checkpoint(
    directory: str | os.PathLike,
    config: dict[str, Any],
    weights: Mapping[str, nn.Module],
    *,
    overwrite: bool,
    known_files: tuple[str, ...] = (),
    tensor_metadata: dict[str, str] | None = None,
    allow_nan: bool = False,
) -> Path:
    """Write ``weights`` (file name -> module) as safetensors, then ``config.json`` last.

    Parameters
    ----------
    directory : path
        Created if needed; may exist if it holds no checkpoint files (or with ``overwrite``).
    config : dict
        The JSON written to ``config.json``.
    weights : mapping of str to nn.Module
        Each module's ``state_dict`` (contiguous CPU copies) goes to its file name.
    overwrite : bool
        Replace a checkpoint already in ``directory``; otherwise :class:`FileExistsError`.
    known_files : tuple of str
        Other names this format may hold (removed on overwrite, so a checkpoint never
        mixes old and new files).
    tensor_metadata : dict, optional
        The safetensors header metadata (default ``{"format": "pt"}``).
    allow_nan : bool
        Let ``config.json`` hold NaN and infinities (non-standard JSON).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"checkpoint path {directory} exists and is not a directory")
    names = (CONFIG_FILE, *weights, *known_files)
    existing = [n for n in dict.fromkeys(names) if (directory / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{directory} already holds a checkpoint ({', '.join(existing)}); pass overwrite=True "
            "(--overwrite) or choose another directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name in existing:  # config first: a crash mid-save leaves no config.json, never a stale one
        (directory / name).unlink()
    header = tensor_metadata if tensor_metadata is not None else {"format": "pt"}
    for name, module in weights.items():
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
        atomic_write(directory / name, lambda p, t=tensors: save_file(t, str(p), metadata=header))
    text = json.dumps(config, indent=2, allow_nan=allow_nan) + "\n"
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return directory


def refuse_if_pickle(path: Path, kind: CheckpointKind) -> None:
    """:class:`CheckpointError` unless ``path`` starts with a safetensors header (a pickle is named as such)."""
    # the header test first: a valid header length such as 0x0280 (640) starts with the bytes
    # 0x80 0x02, which look like the start of a pickle stream
    if has_safetensors_header(path):
        return
    if looks_like_pickle(path):
        raise CheckpointError(pickle_message(path, kind.hint, kind.pickle_what))
    raise CheckpointError(f"{path} is not a safetensors file (bad header); {kind.resave or kind.hint}")


def load_state(path: Path, kind: CheckpointKind) -> dict[str, torch.Tensor]:
    """Read a safetensors file on CPU; missing files, pickles and bad headers are :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        refuse_pickles(path.parent, kind.hint, kind.pickle_what)
        raise CheckpointError(f"{kind.what} {path.parent} has no {path.name}; files there: {listing(path.parent)}")
    refuse_if_pickle(path, kind)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None


def check_state(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, subject: str,
                fix: str = "") -> None:
    """:class:`CheckpointError` naming the first tensor of ``state`` that is missing, extra or of another shape.

    Parameters
    ----------
    module : nn.Module
        The architecture the file must fit.
    state : mapping
        The file's tensors.
    path : Path
        The file, for the message.
    subject : str
        What the file must fit ("the saliency generator", "model 'eeg_convnet'").
    fix : str
        Advice appended to the missing-tensor and shape messages.
    """
    bad = first_state_mismatch(module.state_dict(), state)
    if bad is None:
        return
    where = f"{path} does not fit {subject}"
    advice = f"; {fix}" if fix else ""
    if bad.kind == "missing":
        raise CheckpointError(f"{where}: tensor {bad.key!r} (shape {bad.expected_shape}) is missing from the "
                              f"file{advice}")
    if bad.kind == "shape":
        raise CheckpointError(f"{where}: tensor {bad.key!r} has shape {bad.file_shape} in the file but the "
                              f"architecture needs {bad.expected_shape}{advice}")
    raise CheckpointError(f"{where}: unexpected tensor {bad.key!r} (shape {bad.file_shape}) is not in the architecture")


def load_module(module: _M, path: Path, kind: CheckpointKind, subject: str,
                device: str | torch.device = "cpu", state: Mapping[str, torch.Tensor] | None = None) -> _M:
    """Load the safetensors file ``path`` into ``module`` (checked first), then move it to ``device``, eval mode.

    ``state`` is the file's tensors when the caller has read them already (:func:`load_state`).
    """
    state = load_state(path, kind) if state is None else state
    check_state(module, state, path, subject, kind.fix)
    module.load_state_dict(state, strict=True)
    return module.to(torch.device(device)).eval()
