"""The presenter's fixed choices (no imports: ``bci present --help`` reads them without loading the presenter)."""

#: Corners the photodiode patch can sit in (``"off"``: no patch).
PHOTODIODE_CORNERS = ("off", "top-left", "top-right", "bottom-left", "bottom-right")
#: Trial orders: shuffled passes through the gallery, or the gallery's sorted order repeated.
ORDERS = ("random", "sequential")
