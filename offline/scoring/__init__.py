"""Pure metrics used by training (validation) and evaluation (reports) alike."""
