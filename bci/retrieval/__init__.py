"""Image retrieval: the gallery format and its I/O, building galleries, top-k search."""
