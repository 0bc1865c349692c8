"""Flint's quick start: limits enforced, and state that survives a restart.

Run it twice (``make demo`` does): the second run continues where the first stopped,
because every decision is in the log under ``.flint/``.
"""

from __future__ import annotations

import flint

with flint.Limiter(data_dir=".flint") as limiter:
    change = limiter.limit("api:user-42", rate=8, per="1h")
    first_run = change == "created"
    print(f"limit api:user-42: 8 per hour ({'new' if first_run else 'found on disk'})")

    before = limiter.status("api:user-42")
    assert before is not None
    print(f"  {before['remaining']} requests left at start, {before['allowed']} allowed so far")

    for request in range(1, 6):
        result = limiter.check("api:user-42")
        verdict = "allowed" if result else f"denied, retry in {result.retry_after:.0f}s"
        print(f"  request {request}: {verdict} ({result.remaining} left)")

    limiter.limit("ai:user-42", rate=1000, per="1m", algorithm="sliding_window_log")
    limiter.limit("org:acme", rate=5_000, per="1d", algorithm="fixed_window_counter")
    both = limiter.check_all([("ai:user-42", 250), ("org:acme", 250)])
    print(f"check_all ai:user-42 + org:acme (cost 250 each): allowed={both['allowed']}")

    print("state now:")
    for status in limiter.list():
        print(
            f"  {status['key']:<14} {status['remaining']:>5} of {status['rate']:<5} per "
            f"{status['per']:<3} allowed={status['allowed']} denied={status['denied']}"
        )

print(
    "run me again: the counts continue where they stopped"
    if first_run
    else "this run continued from the state the last one left on disk"
)
