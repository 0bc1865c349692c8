"""The ``flint`` console script: the Rust CLI, run inside the native module."""

from __future__ import annotations

import sys

from flint._native import run_cli


def main() -> None:
    """Run ``flint`` with the process's arguments and exit with its code."""
    sys.exit(run_cli(["flint", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
