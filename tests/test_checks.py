"""The one checks module: wrong type -> TypeError, wrong value -> ValueError, messages name the argument."""

from __future__ import annotations

import numpy as np
import pytest

from streams._checks import (check_bool, check_finite, check_float, check_int, check_type, check_value,
                             ensure_int, ensure_path)


def test_check_int_accepts_numpy_and_refuses_bool():
    assert check_int("n", np.int64(3), low=1) == 3
    assert type(check_int("n", np.int64(3))) is int
    with pytest.raises(TypeError, match=r"n=True must be an integer"):
        check_int("n", True)
    with pytest.raises(TypeError, match=r"n=2.0 must be an integer"):
        check_int("n", 2.0)
    with pytest.raises(ValueError, match=r"n=0 must be an integer >= 1"):
        check_int("n", 0, low=1)
    with pytest.raises(ValueError, match=r"n=9 must be an integer >= 1 and <= 8"):
        check_int("n", 9, low=1, high=8)
    with pytest.raises(TypeError, match="must be an integer"):
        ensure_int("3", "n")


def test_check_float_rules():
    assert check_float("x", np.float32(0.5), low=0, high=1) == 0.5
    with pytest.raises(TypeError, match=r"x=False must be a number"):
        check_float("x", False)
    with pytest.raises(ValueError, match=r"x=nan must be a finite number"):
        check_float("x", float("nan"))
    assert check_float("x", float("inf"), finite=False) == float("inf")
    with pytest.raises(ValueError, match=r"x=0 must be > 0"):
        check_float("x", 0, positive=True)
    with pytest.raises(ValueError, match=r"x=-1 must be >= 0"):
        check_float("x", -1, low=0)


def test_bool_type_value_checks():
    assert check_bool("flag", np.bool_(True)) is True
    with pytest.raises(TypeError, match=r"flag=1 must be True or False"):
        check_bool("flag", 1)
    assert check_type("name", "a", str) == "a"
    with pytest.raises(TypeError, match=r"name must be str or bytes, got int \(3\)"):
        check_type("name", 3, (str, bytes))
    assert check_value("kind", "eeg", ("eeg", "fmri")) == "eeg"
    with pytest.raises(ValueError, match=r"kind='meg' is not one of 'eeg', 'fmri'"):
        check_value("kind", "meg", ("eeg", "fmri"))


def test_check_finite_names_the_first_bad_entry():
    assert check_finite("x", [1.0, 2.0]).shape == (2,)
    with pytest.raises(ValueError, match=r"x holds 2 non-finite value\(s\).*index \(1, 0\)"):
        check_finite("x", np.array([[0.0, 1.0], [np.nan, np.inf]]))
    with pytest.raises(TypeError, match="must be numeric"):
        check_finite("x", np.array(["a"]))


def test_ensure_path(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert ensure_path("out", str(tmp_path / "new")) == tmp_path / "new"
    assert ensure_path("src", f, must_exist=True, kind="file") == f
    with pytest.raises(TypeError, match="src must be a path"):
        ensure_path("src", 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ensure_path("src", tmp_path / "missing", must_exist=True)
    with pytest.raises(FileNotFoundError, match="is a directory"):
        ensure_path("src", tmp_path, must_exist=True, kind="file")
    with pytest.raises(FileNotFoundError, match="is a file, not a directory"):
        ensure_path("src", f, must_exist=True, kind="dir")
