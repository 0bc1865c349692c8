"""The ``flint`` console script: the Rust CLI, run inside the native module."""

from __future__ import annotations

import signal
import sys

from flint._native import run_cli


def main() -> None:
    """Run ``flint`` with the process's arguments and exit with its code."""
    # Ctrl-C belongs to the Rust program, as in the plain binary: `flint server start`
    # handles SIGINT itself (drain, sync, exit 0), and any other command just ends.
    # Python's own handler would raise KeyboardInterrupt once the server had stopped.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(run_cli(["flint", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
