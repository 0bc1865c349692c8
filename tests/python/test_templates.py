"""Key templates (a configured key ending in ``*``) through flint.Limiter and
flint.SharedLimiter alike: every test runs against both, through ``any_limiter``.

A template is the limit of every key that starts with the text before the ``*`` and
has no limit of its own; the longest such prefix wins; a key's own limit beats a
template; a ``*`` anywhere but at the end is an ordinary character. Both limiters run
on the real clock, so limits use long periods ("1h"), under which a key that was
checked is never back at full capacity (and so is never dropped) during a test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import flint

from conftest import STATUS_FIELDS, AnyLimiter


def message_starts(error: BaseException, text: str, limiter: AnyLimiter) -> None:
    """The message is ``text`` (embedded) or ``text`` and then the server's URL."""
    message = str(error)
    if isinstance(limiter, flint.SharedLimiter):
        assert message.startswith(text), message
        assert limiter.url in message, message
    else:
        assert message == text


def test_a_key_with_no_limit_takes_its_templates(any_limiter: AnyLimiter) -> None:
    assert any_limiter.limit("ip:*", rate=3, per="1h") == "created"
    # No limit() for this key: the template's applies.
    first = any_limiter.check("ip:1.2.3.4")
    assert (first.allowed, first.remaining, first.limit) == (True, 2, 3)
    assert any_limiter.check("ip:1.2.3.4", cost=2).allowed
    assert not any_limiter.check("ip:1.2.3.4").allowed
    # Each key has its own state.
    assert any_limiter.check("ip:5.6.7.8").remaining == 2
    status = any_limiter.status("ip:1.2.3.4")
    assert status is not None and set(status) == STATUS_FIELDS
    assert status["template"] == "ip:*"
    assert (status["rate"], status["remaining"], status["allowed"], status["denied"]) == (
        3,
        0,
        2,
        1,
    )
    # The template's counters sum those of its keys.
    template = any_limiter.status("ip:*")
    assert template is not None and template["template"] is None
    assert (template["allowed"], template["denied"]) == (3, 1)
    # Keys outside every template still have no limit.
    with pytest.raises(flint.LimitNotFound):
        any_limiter.check("user:1")
    with pytest.raises(flint.LimitNotFound):
        any_limiter.check("ip")  # the prefix is "ip:"


def test_the_longest_prefix_wins(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=100, per="1h")
    any_limiter.limit("ip:10.*", rate=5, per="1h")
    assert any_limiter.check("ip:10.0.0.1").limit == 5
    assert any_limiter.check("ip:192.168.0.1").limit == 100
    assert any_limiter.status("ip:10.0.0.1")["template"] == "ip:10.*"  # type: ignore[index]
    assert any_limiter.status("ip:192.168.0.1")["template"] == "ip:*"  # type: ignore[index]
    # The order of configuration does not matter.
    any_limiter.limit("id:a*", rate=7, per="1h")
    any_limiter.limit("id:*", rate=70, per="1h")
    assert any_limiter.check("id:abc").limit == 7
    assert any_limiter.check("id:bcd").limit == 70


def test_a_keys_own_limit_beats_a_template(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=100, per="1h")
    any_limiter.limit("ip:127.0.0.1", rate=2, per="1h")
    result = any_limiter.check("ip:127.0.0.1")
    assert (result.limit, result.remaining) == (2, 1)
    status = any_limiter.status("ip:127.0.0.1")
    assert status is not None and status["template"] is None and status["rate"] == 2


def test_status_of_a_covered_key_with_no_state(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=10, per="1h", burst=20)
    status = any_limiter.status("ip:9.9.9.9")
    assert status is not None and set(status) == STATUS_FIELDS
    assert status["key"] == "ip:9.9.9.9"
    assert status["template"] == "ip:*"
    assert (status["rate"], status["burst"], status["remaining"]) == (10, 20, 20)
    assert (status["allowed"], status["denied"], status["last_seen"]) == (0, 0, None)
    assert status["mode"] == "enforce"
    assert any_limiter.history("ip:9.9.9.9") == []
    # reset, refund and remove of such a key do nothing and succeed.
    assert any_limiter.reset("ip:9.9.9.9") is None
    assert any_limiter.refund("ip:9.9.9.9") is None
    assert any_limiter.remove("ip:9.9.9.9") is None
    assert any_limiter.status("ip:9.9.9.9")["remaining"] == 20  # type: ignore[index]
    # Peeking (what a check would leave) creates nothing either.
    peeked = any_limiter.peek("ip:9.9.9.9")
    assert (peeked.allowed, peeked.remaining, peeked.limit) == (True, 19, 20)
    assert [s["key"] for s in any_limiter.list(kind="keys")] == []


def test_list_by_kind(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=10, per="1h")
    any_limiter.limit("ip:10.*", rate=10, per="1h")
    any_limiter.limit("user:1", rate=10, per="1h")
    any_limiter.check("ip:1.1.1.1")
    any_limiter.check("ip:10.0.0.1")
    keys = ["ip:*", "ip:1.1.1.1", "ip:10.*", "ip:10.0.0.1", "user:1"]
    assert [s["key"] for s in any_limiter.list()] == keys
    assert [s["key"] for s in any_limiter.list(kind="all")] == keys
    assert [s["key"] for s in any_limiter.list(kind="keys")] == [
        "ip:1.1.1.1",
        "ip:10.0.0.1",
        "user:1",
    ]
    assert [s["key"] for s in any_limiter.list(kind="templates")] == ["ip:*", "ip:10.*"]
    assert [s["key"] for s in any_limiter.list("ip:10", kind="templates")] == ["ip:10.*"]
    assert [s["key"] for s in any_limiter.list("ip:10", "keys")] == ["ip:10.0.0.1"]
    templates = {s["key"]: s["template"] for s in any_limiter.list()}
    assert templates == {
        "ip:*": None,
        "ip:1.1.1.1": "ip:*",
        "ip:10.*": None,
        "ip:10.0.0.1": "ip:10.*",
        "user:1": None,
    }


def test_a_bad_list_kind_names_the_choices(any_limiter: AnyLimiter) -> None:
    with pytest.raises(flint.InvalidArgument) as caught:
        any_limiter.list(kind="key")  # type: ignore[arg-type]
    assert str(caught.value) == ('list kind "key" is unknown: use one of all, keys, templates')
    with pytest.raises(flint.InvalidArgument) as caught:
        any_limiter.list(kind=None)  # type: ignore[arg-type]
    assert "kind None" in str(caught.value)


@pytest.mark.parametrize("method", ["check", "peek", "refund"])
def test_a_template_is_not_a_key_to_check(any_limiter: AnyLimiter, method: str) -> None:
    any_limiter.limit("ip:*", rate=10, per="1h")
    with pytest.raises(flint.InvalidArgument) as caught:
        getattr(any_limiter, method)("ip:*")
    message_starts(
        caught.value,
        'key "ip:*" ends in "*", so it is a template (the limit of every key that starts '
        'with "ip:"), not a key to check: check a key it covers, such as "ip:203.0.113.9"',
        any_limiter,
    )
    assert caught.value.key == "ip:*"
    assert any_limiter.status("ip:*")["allowed"] == 0  # type: ignore[index]


def test_a_star_anywhere_else_is_an_ordinary_character(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("a*b", rate=2, per="1h")
    assert any_limiter.check("a*b").remaining == 1
    with pytest.raises(flint.LimitNotFound):
        any_limiter.check("axb")
    with pytest.raises(flint.LimitNotFound):
        any_limiter.check("a*bc")
    status = any_limiter.status("a*b")
    assert status is not None and status["template"] is None
    assert [s["key"] for s in any_limiter.list(kind="templates")] == []


def test_reconfiguring_a_template_changes_its_live_keys(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=5, per="1h")
    assert any_limiter.check("ip:1.1.1.1", cost=2).remaining == 3
    assert any_limiter.limit("ip:*", rate=10, per="1h") == "updated"
    status = any_limiter.status("ip:1.1.1.1")
    assert status is not None
    # The same algorithm: the consumed units carry over.
    assert (status["rate"], status["remaining"], status["template"]) == (10, 8, "ip:*")
    result = any_limiter.check("ip:1.1.1.1")
    assert (result.limit, result.remaining) == (10, 7)
    # Down below what was consumed: the key is empty.
    any_limiter.limit("ip:*", rate=3, per="1h")
    assert not any_limiter.check("ip:1.1.1.1").allowed


def test_removing_a_template_removes_its_keys(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=5, per="1h")
    any_limiter.limit("ip:10.*", rate=5, per="1h")
    any_limiter.check("ip:1.1.1.1")
    any_limiter.check("ip:10.0.0.1")
    any_limiter.remove("ip:*")
    assert any_limiter.status("ip:*") is None
    assert any_limiter.status("ip:1.1.1.1") is None
    with pytest.raises(flint.LimitNotFound):
        any_limiter.check("ip:1.1.1.1")
    # Another template's keys stay.
    assert [s["key"] for s in any_limiter.list()] == ["ip:10.*", "ip:10.0.0.1"]
    assert any_limiter.status("ip:10.0.0.1")["remaining"] == 4  # type: ignore[index]


def test_resetting_a_template_resets_its_keys(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=5, per="1h")
    any_limiter.check("ip:1.1.1.1", cost=5)
    any_limiter.check("ip:2.2.2.2", cost=3)
    any_limiter.reset("ip:*")
    assert any_limiter.check("ip:1.1.1.1").remaining == 4
    assert any_limiter.check("ip:2.2.2.2").remaining == 4


def test_top_names_a_denied_template_key(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=1, per="1h")
    any_limiter.limit("user:1", rate=1, per="1h")
    any_limiter.check("ip:6.6.6.6")
    for _ in range(3):
        any_limiter.check("ip:6.6.6.6")
    any_limiter.check("ip:7.7.7.7")
    any_limiter.check("ip:7.7.7.7")
    any_limiter.check("user:1")
    top = any_limiter.top(by="denied", limit=10)
    keys = [s["key"] for s in top]
    # Templates rank too (their counters sum their keys'); the keys come by name.
    assert keys.index("ip:6.6.6.6") < keys.index("ip:7.7.7.7")
    first_key = next(s for s in top if not s["key"].endswith("*"))
    assert (first_key["key"], first_key["denied"], first_key["template"]) == (
        "ip:6.6.6.6",
        3,
        "ip:*",
    )
    assert "user:1" not in keys or top[keys.index("user:1")]["denied"] == 0


def test_doctor_reports_templates(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=5, per="1h")
    any_limiter.limit("user:1", rate=5, per="1h")
    any_limiter.check("ip:1.1.1.1")
    any_limiter.check("ip:2.2.2.2")
    report = any_limiter.doctor()
    assert report["templates"] == [{"template": "ip:*", "live_keys": 2, "remembered_keys": 0}]
    assert isinstance(report["memory_bytes"], int) and report["memory_bytes"] > 0
    resident = report["process_resident_bytes"]
    assert resident is None or (isinstance(resident, int) and resident > 0)


def test_an_unused_template_key_is_dropped_by_a_sweep(
    limiter: flint.Limiter, clock: flint.ManualClock
) -> None:
    # The embedded limiter's manual clock: the key refills, then is swept away, and
    # its counters stay in the template's summary for top().
    limiter.limit("ip:*", rate=1, per="1s")
    limiter.check("ip:1.1.1.1")
    assert not limiter.check("ip:1.1.1.1").allowed
    assert limiter.sweep() == 0, "not yet back at full capacity"
    clock.advance(2)
    assert limiter.sweep() == 1
    assert [s["key"] for s in limiter.list(kind="keys")] == []
    status = limiter.status("ip:1.1.1.1")
    assert status is not None
    assert (status["template"], status["remaining"], status["denied"]) == ("ip:*", 1, 0)
    assert limiter.history("ip:1.1.1.1") == []
    assert limiter.doctor()["templates"] == [
        {"template": "ip:*", "live_keys": 0, "remembered_keys": 1}
    ]
    assert [s["key"] for s in limiter.top(by="denied") if s["key"] == "ip:1.1.1.1"] == [
        "ip:1.1.1.1"
    ]
    # It decides as before when it comes back.
    assert limiter.check("ip:1.1.1.1").allowed


async def test_async_variants(any_limiter: AnyLimiter) -> None:
    assert await any_limiter.alimit("ip:*", rate=2, per="1h") == "created"
    assert (await any_limiter.acheck("ip:1.1.1.1")).remaining == 1
    assert await any_limiter.aallow("ip:1.1.1.1") is True
    assert await any_limiter.aallow("ip:1.1.1.1") is False
    status = await any_limiter.astatus("ip:1.1.1.1")
    assert status is not None and status["template"] == "ip:*"
    assert [s["key"] for s in await any_limiter.alist(kind="templates")] == ["ip:*"]
    assert [s["key"] for s in await any_limiter.alist(None, "keys")] == ["ip:1.1.1.1"]
    with pytest.raises(flint.InvalidArgument):
        await any_limiter.acheck("ip:*")
    await any_limiter.aremove("ip:*")
    assert await any_limiter.alist() == []


def doc_example(section: str) -> str:
    """The first Python example under the heading ``section`` of docs/python.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "python.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_docs_example_of_templates_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(doc_example("Key templates"), namespace)
    assert (tmp_path / ".flint").is_dir()
