"""Live PyQtGraph viewer: signals, markers, retrieved and generated images, session health.

Two ways to run (see docs/viewer.md):

* in-process, next to a running :class:`~bci.runtime.live.LiveRuntime`
  (:func:`run_live_viewer`, used by ``bci live``);
* stand-alone over LSL (:func:`run_stream_viewer`, ``bci view``).

Importing this package does not import Qt; the widgets (:mod:`bci.viewer.widgets`) are
loaded when a window is opened.
"""

from __future__ import annotations

from bci.viewer.app import ViewerOptions, ensure_qapp, run_live_viewer, run_stream_viewer, run_viewer
from bci.viewer.display import NoDisplayError, display_available
from bci.viewer.images import ImageCache, decode_image_ref, encode_png_data_uri, load_gallery, placeholder_tile
from bci.viewer.model import ResultEntry, ResultsSnapshot, TraceSource, ViewerModel
from bci.viewer.sources import Health, LslProvider, ProcessedStream, RuntimeProvider

__all__ = [
    "Health",
    "ImageCache",
    "LslProvider",
    "NoDisplayError",
    "ProcessedStream",
    "ResultEntry",
    "ResultsSnapshot",
    "RuntimeProvider",
    "TraceSource",
    "ViewerModel",
    "ViewerOptions",
    "decode_image_ref",
    "display_available",
    "encode_png_data_uri",
    "ensure_qapp",
    "load_gallery",
    "placeholder_tile",
    "run_live_viewer",
    "run_stream_viewer",
    "run_viewer",
]
