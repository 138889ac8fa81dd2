"""streams._context: the one definition of the stream objects' ``with`` support."""

from __future__ import annotations

import pytest

from streams._context import ClosingContext, PlayingContext


def test_closing_context_closes_on_exit_even_after_an_error() -> None:
    calls = []

    class Thing(ClosingContext):
        def close(self) -> None:
            calls.append("close")

    with pytest.raises(RuntimeError), Thing() as t:
        assert isinstance(t, Thing)
        raise RuntimeError("boom")
    assert calls == ["close"]


def test_playing_context_opens_then_stops_and_closes() -> None:
    calls = []

    class Player(PlayingContext):
        def open(self) -> None:
            calls.append("open")

        def stop(self) -> None:
            calls.append("stop")

        def close(self) -> None:
            calls.append("close")

    with Player() as p:
        assert isinstance(p, Player) and calls == ["open"]
    assert calls == ["open", "stop", "close"]
