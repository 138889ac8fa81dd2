"""Epoch datasets (schema, writer, reader), leak-free splits, building from sessions/simulator, targets."""
