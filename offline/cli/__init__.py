"""The offline commands of ``bci``: train, evaluate, dataset, import, clip (thin handlers)."""
