"""Shadow limits (``limit(..., mode="shadow")``) through flint.Limiter and
flint.SharedLimiter alike: every check is allowed; one the limit would have denied
says ``shadow_denied``, consumes nothing and is counted. Both limiters run on the real
clock, so limits use long periods ("1h")."""

from __future__ import annotations

from pathlib import Path

import pytest

import flint

from conftest import RESULT_FIELDS, AnyLimiter


def test_a_shadow_limit_allows_and_counts_what_it_would_deny(any_limiter: AnyLimiter) -> None:
    assert any_limiter.limit("k", rate=2, per="1h", mode="shadow") == "created"
    assert any_limiter.status("k")["mode"] == "shadow"  # type: ignore[index]
    first = any_limiter.check("k", cost=2)
    assert (first.allowed, first.shadow_denied, first.remaining) == (True, False, 0)
    over = any_limiter.check("k")
    assert over.allowed and bool(over)
    assert over.shadow_denied is True
    assert (over.remaining, over.retry_after) == (0, 0.0)
    assert over.to_dict()["shadow_denied"] is True and set(over.to_dict()) == RESULT_FIELDS
    assert repr(over).endswith(", shadow_denied=True)")
    assert "shadow_denied" not in repr(first)
    assert any_limiter.allow("k") is True
    status = any_limiter.status("k")
    assert status is not None
    # Nothing consumed beyond the rate; the would-be denials are counted apart from
    # the allowed checks (which consumed units) and the denied ones.
    assert (status["remaining"], status["allowed"], status["allowed_cost"]) == (0, 1, 2)
    assert (status["denied"], status["shadow_denied"]) == (0, 2)
    events = any_limiter.history("k")
    assert [e["shadow_denied"] for e in events] == [False, True, True]
    assert all(e["allowed"] for e in events)


def test_an_enforced_limit_never_shadow_denies(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=1, per="1h", mode="enforce")
    assert any_limiter.status("k")["mode"] == "enforce"  # type: ignore[index]
    assert any_limiter.check("k").shadow_denied is False
    denied = any_limiter.check("k")
    assert (denied.allowed, denied.shadow_denied) == (False, False)
    assert any_limiter.status("k")["shadow_denied"] == 0  # type: ignore[index]
    assert [e["shadow_denied"] for e in any_limiter.history("k")] == [False, False]


def test_peek_of_a_shadow_limit(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=1, per="1h", mode="shadow")
    any_limiter.check("k")
    peeked = any_limiter.peek("k")
    assert (peeked.allowed, peeked.shadow_denied) == (True, True)
    assert any_limiter.status("k")["shadow_denied"] == 0, "a peek counts nothing"  # type: ignore[index]


def test_top_by_shadow_denied(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("a", rate=1, per="1h", mode="shadow")
    any_limiter.limit("b", rate=1, per="1h", mode="shadow")
    any_limiter.limit("c", rate=1, per="1h")
    for _ in range(2):
        any_limiter.check("a")
    for _ in range(4):
        any_limiter.check("b")
    for _ in range(9):
        any_limiter.check("c")  # denied, not shadow-denied
    top = any_limiter.top(by="shadow_denied", limit=2)
    assert [(s["key"], s["shadow_denied"]) for s in top] == [("b", 3), ("a", 1)]


def test_switching_modes_keeps_the_state(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=2, per="1h", mode="shadow")
    for _ in range(3):
        assert any_limiter.check("k").allowed
    assert any_limiter.limit("k", rate=2, per="1h", mode="enforce") == "updated"
    # The units consumed in shadow mode count: the next check is denied at once.
    denied = any_limiter.check("k")
    assert (denied.allowed, denied.shadow_denied) == (False, False)
    status = any_limiter.status("k")
    assert status is not None
    assert (status["mode"], status["denied"], status["shadow_denied"]) == ("enforce", 1, 1)
    # And back: allowed again, as a would-be denial.
    any_limiter.limit("k", rate=2, per="1h", mode="shadow")
    assert any_limiter.check("k").shadow_denied
    assert any_limiter.limit("k", rate=2, per="1h", mode="shadow") == "unchanged"


def test_a_shadow_template(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=1, per="1h", mode="shadow")
    any_limiter.check("ip:1.1.1.1")
    over = any_limiter.check("ip:1.1.1.1")
    assert (over.allowed, over.shadow_denied) == (True, True)
    status = any_limiter.status("ip:1.1.1.1")
    assert status is not None
    assert (status["mode"], status["template"], status["shadow_denied"]) == ("shadow", "ip:*", 1)


def test_check_all_with_a_shadow_limit(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("s", rate=1, per="1h", mode="shadow")
    any_limiter.limit("e", rate=5, per="1h")
    any_limiter.check("s")
    result = any_limiter.check_all(["s", "e"])
    assert result["allowed"] is True and result["denied_key"] is None
    assert [r["shadow_denied"] for r in result["results"]] == [True, False]


def test_a_bad_mode_is_refused_with_the_engines_words(any_limiter: AnyLimiter) -> None:
    with pytest.raises(flint.InvalidArgument) as caught:
        any_limiter.limit("k", rate=1, per="1h", mode="dry-run")  # type: ignore[arg-type]
    assert str(caught.value) == (
        'for key "k": mode "dry-run" is unknown: use "enforce" (deny over the limit, the '
        'default) or "shadow" (allow everything, count what would be denied)'
    )
    assert caught.value.key == "k"
    with pytest.raises(flint.InvalidArgument) as caught:
        any_limiter.limit("k", rate=1, per="1h", mode=None)  # type: ignore[arg-type]
    assert str(caught.value).startswith('mode None for key "k" is a NoneType, not a str')
    assert any_limiter.status("k") is None, "nothing was configured"


def test_the_decorator_does_not_raise_on_a_shadow_denial(any_limiter: AnyLimiter) -> None:
    calls = []

    @any_limiter.rate_limit("fn", rate=1, per="1h", mode="shadow")
    def handler() -> str:
        calls.append(1)
        return "ok"

    assert [handler() for _ in range(3)] == ["ok", "ok", "ok"]
    assert len(calls) == 3
    assert any_limiter.status("fn")["shadow_denied"] == 2  # type: ignore[index]

    @any_limiter.rate_limit("strict", rate=1, per="1h")
    def strict() -> str:
        return "ok"

    assert strict() == "ok"
    with pytest.raises(flint.RateLimitExceeded):
        strict()


async def test_the_async_decorator_and_methods(any_limiter: AnyLimiter) -> None:
    assert await any_limiter.alimit("a", rate=1, per="1h", mode="shadow") == "created"

    @any_limiter.rate_limit("fn", rate=1, per="1h", mode="shadow")
    async def handler() -> str:
        return "ok"

    assert [await handler() for _ in range(3)] == ["ok", "ok", "ok"]
    await any_limiter.acheck("a")
    over = await any_limiter.acheck("a")
    assert (over.allowed, over.shadow_denied) == (True, True)
    assert (await any_limiter.astatus("fn"))["shadow_denied"] == 2  # type: ignore[index]
    top = await any_limiter.atop("shadow_denied", 1)
    assert [s["key"] for s in top] == ["fn"]


def test_acquire_and_the_context_manager_with_a_shadow_limit(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=1, per="1h", mode="shadow")
    with any_limiter as same:
        assert same is any_limiter
        any_limiter.check("k")
        # A wait of an hour would be needed if enforced; a shadow limit grants at once.
        result = any_limiter.acquire("k", timeout=0)
        assert (result.allowed, result.shadow_denied) == (True, True)


def doc_example(section: str) -> str:
    """The first Python example under the heading ``section`` of docs/python.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "python.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_docs_example_of_shadow_mode_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(doc_example("Shadow mode"), namespace)
    assert (tmp_path / ".flint").is_dir()
