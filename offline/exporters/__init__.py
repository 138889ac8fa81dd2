"""Exporters of Zarr sessions to public formats.

* :func:`export_bids`: one session -> one BIDS EEG recording (mne-bids), LSL timestamps, gaps and
  decoded results kept in ``sourcedata/bci`` and ``derivatives/bci`` (see ``docs/data.md``).
"""

from offline.exporters.bids import BidsExportOptions, BidsExportResult, export_bids

__all__ = ["BidsExportOptions", "BidsExportResult", "export_bids"]
