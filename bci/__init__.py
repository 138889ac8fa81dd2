"""Real-time BCI runtime: windowing, preprocessing, models, inference, retrieval, viewer, CLI."""

__version__ = "0.1.0"
