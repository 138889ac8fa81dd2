"""Inference: put a model on a device, warm it up, and encode batches of windows fast.

:class:`Encoder` wraps a registered model for the live path: device selection
(CUDA when present), ``torch.inference_mode``, the checkpoint's scaler, optional
``torch.compile``, a CUDA graph for batch 1 on GPUs, and warm-up passes at start so
the first real window is as fast as the rest. It takes and returns numpy arrays.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from bci.models.registry import EncoderModel, ModelConfig
from streams._checks import check_int

__all__ = ["Encoder", "measure_latency", "select_device"]

logger = logging.getLogger(__name__)

#: Batch sizes warmed up once each after the batch-1 passes (windows that complete together).
WARMUP_BATCH_SIZES = (2, 4)


def select_device(requested: str | torch.device = "auto") -> torch.device:
    """Resolve a device request.

    Parameters
    ----------
    requested : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        Unknown device string, or CUDA asked for but not available (the message says why).
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    if not isinstance(requested, str):
        raise TypeError(f"device={requested!r} must be a string such as 'auto', 'cpu' or 'cuda'")
    text = requested.strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        return _cuda_device(requested, text)
    raise ValueError(f"device={requested!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N' (--device)")


def _cuda_device(requested: str, text: str) -> torch.device:
    if not torch.cuda.is_available():
        why = (
            "this torch build has no CUDA support"
            if torch.version.cuda is None
            else f"no CUDA GPU is visible (torch {torch.__version__} built for CUDA {torch.version.cuda})"
        )
        raise ValueError(f"device={requested!r} was requested but CUDA is not available: {why}; "
                         "use --device cpu or --device auto")
    device = torch.device(text)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={requested!r}: only {torch.cuda.device_count()} CUDA device(s) are visible "
            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
        )
    return device


class Encoder:
    """A model ready for live inference on numpy windows.

    Parameters
    ----------
    model : EncoderModel
        A registered model (e.g. from :func:`bci.models.load_checkpoint`).
    device : str or torch.device
        ``"auto"`` (default: CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    compile : bool or "auto"
        Wrap the model in ``torch.compile``. ``"auto"``: only on CUDA without the batch-1
        CUDA graph (``cuda_graph=False``) and with triton installed. On CPU it cost 28 s at
        start for 0.53 -> 0.35 ms per window (docs/models.md); on CUDA the graph replay
        already removes the launch overhead that compiling would save. A failed automatic
        compile falls back to eager with a log message; a failed explicit one raises.
    warmup : int
        Forward passes with zeros at batch 1 at start (plus one each at batch sizes
        :data:`WARMUP_BATCH_SIZES`), so the first real window is not slow. 0 disables.
    threads : int or None
        ``torch.set_num_threads(threads)`` (process-wide). None: 1 on CPU, torch's setting
        left alone on CUDA. One intra-op thread is the robust choice for batch-1 live
        inference: with 2 threads on 2 cores, any other busy thread (acquisition, viewer,
        another process) makes every parallel op wait for a time slice, and p99 went from
        ~1 ms to 33 ms in our measurement (docs/models.md). Pass
        ``threads=torch.get_num_threads()`` to keep the current setting.
    cuda_graph : bool or "auto"
        On CUDA, capture batch-1 inference in a ``torch.cuda.CUDAGraph`` and replay it
        (``"auto"``: on CUDA, falling back to the normal path if capture fails). Ignored on CPU.
    max_batch : int
        Larger batches are split into chunks of this size.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        compile: bool | str = "auto",
        warmup: int = 3,
        threads: int | None = None,
        cuda_graph: bool | str = "auto",
        max_batch: int = 256,
    ) -> None:
        if not isinstance(model, EncoderModel):
            raise TypeError(
                f"Encoder expects a registered model (EncoderModel), got {type(model).__name__}; "
                "load one with bci.models.load_checkpoint"
            )
        warmup = check_int("warmup", warmup, low=0)
        max_batch = check_int("max_batch", max_batch, low=1)
        self.device = select_device(device)
        self.threads = _configure_threads(threads, self.device)
        self.model = model.to(self.device).eval()
        self._config = model.get_config()
        self.n_chans, self.n_times = self._config.n_chans, self._config.n_times
        self.max_batch = max_batch
        self._scale, self._shift = self._scaler_tensors(self._config.scaler)
        use_graph = self._resolve_flag("cuda_graph", cuda_graph, True) and self.device.type == "cuda"
        auto_compile = self.device.type == "cuda" and not use_graph and _has_triton()
        self.compiled = self._resolve_flag("compile", compile, auto_compile)
        self._forward: Any = torch.compile(self.model) if self.compiled else self.model
        self.warmup_calls = 0
        self._graph: tuple[Any, torch.Tensor, dict[str, torch.Tensor]] | None = None
        self._warm_up(warmup, explicit_compile=compile is True)
        if use_graph:
            self._capture_graph(explicit=cuda_graph is True)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> ModelConfig:
        """The model's config (shared object: do not modify)."""
        return self._config

    @property
    def uses_cuda_graph(self) -> bool:
        """True when batch-1 calls replay a captured CUDA graph."""
        return self._graph is not None

    # ------------------------------------------------------------------ checks
    def check_stream(
        self,
        n_channels: int,
        sfreq: float,
        ch_names: list[str] | tuple[str, ...] | None = None,
        *,
        stream_name: str = "",
    ) -> None:
        """Raise ValueError if a stream cannot feed this model, naming both sides.

        Parameters
        ----------
        n_channels : int
            Channels of the stream (after any channel selection).
        sfreq : float
            Effective rate of the windows, i.e. after any resampling in preprocessing.
        ch_names : list of str, optional
            Stream channel names; compared (names and order) when the model has names too.
        stream_name : str
            Used in the message.
        """
        what = f"stream {stream_name!r}" if stream_name else "the stream"
        cfg = self._config
        problems = []
        if n_channels != cfg.n_chans:
            problems.append(
                f"{what} has {n_channels} channels but the model {cfg.name!r} expects {cfg.n_chans}; "
                "use a model trained on this montage, or retrain"
            )
        if not (isinstance(sfreq, (int, float)) and math.isclose(float(sfreq), cfg.sfreq, rel_tol=1e-6)):
            problems.append(
                f"{what} gives windows at {sfreq!r} Hz (after preprocessing) but the model {cfg.name!r} "
                f"expects {cfg.sfreq:g} Hz; resample in preprocessing or retrain"
            )
        if ch_names is not None and cfg.ch_names is not None and not problems:
            problem = _compare_names(list(ch_names), cfg.ch_names, what, cfg.name)
            if problem:
                problems.append(problem)
        if problems:
            raise ValueError("; ".join(problems))

    # ------------------------------------------------------------------ encoding
    def __call__(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Encode windows.

        Parameters
        ----------
        windows : numpy.ndarray
            ``(batch, n_chans, n_times)`` or one window ``(n_chans, n_times)``; any real
            dtype (converted to float32). The checkpoint's scaler is applied here.

        Returns
        -------
        dict of numpy.ndarray (float32)
            ``"embedding"`` ``(batch, embed_dim)`` and, for models with a head, ``"scores"``
            ``(batch, n_classes)`` (softmax of the logits). A single 2-D window gives
            outputs without the batch axis (``(embed_dim,)``).
        """
        x, single = self._as_batch(windows)
        if x.shape[0] <= self.max_batch:
            out = self._run(x)
        else:
            parts = [self._run(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
            out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if single:
            return {k: v[0] for k, v in out.items()}
        return out

    def _as_batch(self, windows: np.ndarray) -> tuple[np.ndarray, bool]:
        if not isinstance(windows, np.ndarray):
            raise TypeError(f"windows must be a numpy array, got {type(windows).__name__}")
        if not (np.issubdtype(windows.dtype, np.floating) or np.issubdtype(windows.dtype, np.integer)):
            raise TypeError(f"windows must hold real numbers, got dtype {windows.dtype}")
        single = windows.ndim == 2
        x = windows[None] if single else windows
        if x.ndim != 3 or x.shape[1:] != (self.n_chans, self.n_times):
            raise ValueError(
                f"windows have shape {windows.shape} but the model {self._config.name!r} expects "
                f"(batch, {self.n_chans}, {self.n_times}) or ({self.n_chans}, {self.n_times})"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays
            x = x.copy()
        return x, single

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if x.shape[0] == 0:
            return self._empty()
        with torch.inference_mode():
            if self._graph is not None and x.shape[0] == 1:
                graph, static_in, static_out = self._graph
                static_in.copy_(torch.from_numpy(x))
                graph.replay()
                return {k: v.cpu().numpy() for k, v in static_out.items()}
            out = self._compute(torch.from_numpy(x).to(self.device))
            return {k: v.cpu().numpy() for k, v in out.items()}

    def _compute(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._scale is not None:
            x = torch.addcmul(self._shift, x, self._scale)
        out = self._forward(x)
        result = {"embedding": out["embedding"].float()}
        if "logits" in out:
            result["scores"] = torch.softmax(out["logits"].float(), dim=-1)
        return result

    def _empty(self) -> dict[str, np.ndarray]:
        out = {"embedding": np.zeros((0, self._config.embed_dim), np.float32)}
        if self._config.n_classes:
            out["scores"] = np.zeros((0, self._config.n_classes), np.float32)
        return out

    # ------------------------------------------------------------------ start-up
    def _scaler_tensors(self, scaler: dict[str, Any] | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``x * scale + shift`` with ``scale = 1/std`` and ``shift = -mean/std``, shaped (1, C, 1)."""
        if scaler is None:
            return None, None
        mean = np.asarray(scaler["mean"], dtype=np.float64).reshape(1, -1, 1)
        std = np.asarray(scaler["std"], dtype=np.float64).reshape(1, -1, 1)
        scale = torch.as_tensor(1.0 / std, dtype=torch.float32, device=self.device)
        shift = torch.as_tensor(-mean / std, dtype=torch.float32, device=self.device)
        return scale, shift

    @staticmethod
    def _resolve_flag(name: str, value: bool | str, auto: bool) -> bool:
        if isinstance(value, bool):
            return value
        if value == "auto":
            return auto
        raise ValueError(f"{name}={value!r} must be True, False or 'auto'")

    def _warm_up(self, n: int, *, explicit_compile: bool) -> None:
        if n == 0:
            return
        try:
            for batch in (1,) * n + WARMUP_BATCH_SIZES:
                self._run(np.zeros((batch, self.n_chans, self.n_times), np.float32))
                self.warmup_calls += 1
        except Exception as exc:
            if not self.compiled or explicit_compile:
                raise
            logger.warning("torch.compile failed (%s: %s); running the model eagerly", type(exc).__name__, exc)
            self.compiled, self._forward, self.warmup_calls = False, self.model, 0
            self._warm_up(n, explicit_compile=False)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _capture_graph(self, *, explicit: bool) -> None:
        """Capture scaler + model + softmax at batch 1 into a CUDA graph."""
        try:
            with torch.inference_mode():
                static_in = torch.zeros((1, self.n_chans, self.n_times), device=self.device)
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    for _ in range(3):
                        self._compute(static_in)
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._compute(static_in)
                graph.replay()
                torch.cuda.synchronize(self.device)
            self._graph = (graph, static_in, static_out)
        except Exception as exc:
            if explicit:
                raise RuntimeError(f"CUDA graph capture failed: {exc}; use cuda_graph=False") from exc
            logger.warning("CUDA graph capture failed (%s: %s); batch 1 runs without it", type(exc).__name__, exc)
            self._graph = None


def _configure_threads(threads: int | None, device: torch.device) -> int:
    """Apply the intra-op thread setting (None: 1 on CPU, unchanged elsewhere); return it."""
    if threads is not None:
        threads = check_int("threads", threads, low=1)
    elif device.type == "cpu":
        threads = 1
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _compare_names(stream: list[str], model: list[str], what: str, model_name: str) -> str | None:
    """Describe how stream channel names differ from the model's, or None if identical."""
    if stream == model:
        return None
    missing = [c for c in model if c not in set(stream)]
    extra = [c for c in stream if c not in set(model)]
    if missing or extra:
        return (
            f"{what} channel names differ from those of the model {model_name!r}: "
            f"{len(missing)} model channels missing from the stream (e.g. {missing[:5]}), "
            f"{len(extra)} stream channels unknown to the model (e.g. {extra[:5]}); "
            "use a model trained on these channel names, or retrain"
        )
    i = next(i for i, (a, b) in enumerate(zip(stream, model)) if a != b)
    return (
        f"{what} has the model {model_name!r}'s channels in a different order "
        f"(position {i}: stream {stream[i]!r}, model {model[i]!r}); reorder the channels to the model's order"
    )


def measure_latency(
    encoder: Encoder, *, n_calls: int = 300, batch: int = 1, seed: int = 0
) -> dict[str, float]:
    """Time ``encoder`` on random windows: p50/p90/p99/mean/max in milliseconds.

    Parameters
    ----------
    encoder : Encoder
        Already warmed up.
    n_calls : int
        Timed calls (each on a fresh random batch).
    batch : int
        Windows per call.
    seed : int
        Seed of the random windows.
    """
    n_calls = check_int("n_calls", n_calls, low=1)
    batch = check_int("batch", batch, low=1)
    rng = np.random.default_rng(seed)
    shape = (batch, encoder.n_chans, encoder.n_times)
    data = rng.standard_normal((min(n_calls, 16), *shape)).astype(np.float32)
    times = np.empty(n_calls)
    for i in range(n_calls):
        x = data[i % len(data)]
        t0 = time.perf_counter()
        encoder(x)
        times[i] = (time.perf_counter() - t0) * 1000.0
    return {
        "p50": float(np.percentile(times, 50)),
        "p90": float(np.percentile(times, 90)),
        "p99": float(np.percentile(times, 99)),
        "mean": float(times.mean()),
        "max": float(times.max()),
    }
