"""The decoding runtime: windowing, preprocessing-to-results pipeline, inference, sinks, live and replay runs."""
