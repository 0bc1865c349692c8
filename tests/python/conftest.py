"""Shared fixtures: a fresh data directory, a manual clock and a limiter on both."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flint

START = 1_700_000_000.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / ".flint"


@pytest.fixture
def clock() -> flint.ManualClock:
    return flint.ManualClock(start=START)


@pytest.fixture
def limiter(data_dir: Path, clock: flint.ManualClock) -> Iterator[flint.Limiter]:
    with flint.Limiter(data_dir=data_dir, clock=clock) as limiter:
        yield limiter


@pytest.fixture
def flint_script() -> Path:
    """The installed ``flint`` console script of the running environment."""
    return Path(sys.executable).parent / "flint"
