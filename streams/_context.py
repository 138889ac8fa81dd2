"""``with`` support shared by the stream objects: one definition of ``__enter__``/``__exit__``."""

from __future__ import annotations

from typing import Any, Self

__all__ = ["ClosingContext", "PlayingContext"]


class ClosingContext:
    """``with obj:`` gives ``obj`` and calls ``obj.close()`` on exit (the subclass defines ``close``)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    close: Any


class PlayingContext:
    """``with player:`` calls ``open()`` on entry and ``stop()`` then ``close()`` on exit.

    For objects that push data to LSL outlets (replay, live simulation): the outlets are open
    inside the block, and leaving it, normally or by an exception, stops playing and closes them.
    """

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    open: Any
    stop: Any
    close: Any
