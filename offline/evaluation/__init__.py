"""Evaluation of checkpoints: metrics with chance, ridge baselines, oracles, plots, reports, export."""
