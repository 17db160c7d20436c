"""Conditions cannot allocate without bound: repetition, % formatting, huge numbers are refused.

Literal operands are refused when the plan is validated; operands that are earlier results
(known only at run time) are refused when evaluated, before anything big is built.
"""

from __future__ import annotations

import tracemalloc

import pytest

from foreman.engine.conditions import MAX_SIZE, ConditionError, parse_condition


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("len('a' * 1500000000) > 0", "repeats text or a list with *"),
        ("len(1500000000 * 'a') > 0", "repeats text or a list with *"),
        ("[0] * 1500000000 == []", "repeats text or a list with *"),
        ("len(('a' + 'b') * 750000000) > 0", "repeats text or a list with *"),
        ("len(lower(summary) * 1000000) > 0", "repeats text or a list with *"),
        ("'%1500000000d' % 1 == ''", "formats text with %"),
        ("10 ** 10**10 > 1", "uses ** (power)"),
        ("1 << 10**9 > 1", "uses <<"),
        ("n > 1000000000000000000000000000000000", "larger than 10**30"),
    ],
)
def test_validation_refuses_literal_attacks_with_the_reason(source: str, message: str) -> None:
    with pytest.raises(ConditionError, match="condition .* " + message.replace("*", r"\*").replace("(", r"\(")
                       .replace(")", r"\)")):
        parse_condition(source)


@pytest.mark.parametrize(
    ("source", "results", "message"),
    [
        ("len(summary * 1000000) > 0", {"summary": "a" * 50}, r"\* works on numbers only"),
        ("len(n * files) > 0", {"files": [0], "n": 6_000_000}, r"\* works on numbers only"),
        ("len(fmt % n) > 0", {"fmt": "%50000000d", "n": 1}, "% works on numbers only"),
        ("n * n * n > 0", {"n": 10**20}, "exceeds 10\\*\\*30"),
        ("len(s + s) > 0", {"s": "a" * (MAX_SIZE // 2 + 1)}, f"the limit is {MAX_SIZE}"),
    ],
)
def test_evaluation_refuses_results_that_would_grow_huge(source: str, results: dict, message: str) -> None:
    # The operands are results: only evaluation can tell. Each would build ~50 MB (a real attack
    # builds gigabytes; kept small so a regression cannot exhaust a shared machine's memory).
    condition = parse_condition(source)
    tracemalloc.start()
    try:
        with pytest.raises(ConditionError, match=message):
            condition.evaluate(results)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, peak  # refused before building anything


@pytest.mark.parametrize(
    ("source", "results", "expected"),
    [
        ("count % 2 == 0", {"count": 4}, True),
        ("total * 2 > 50", {"total": 30}, True),
        ("summary + '!' == 'done!'", {"summary": "done"}, True),
        ("len(a + b) == 3", {"a": [1], "b": [2, 3]}, True),
    ],
)
def test_ordinary_arithmetic_still_works(source: str, results: dict, expected: bool) -> None:
    assert parse_condition(source).evaluate(results) is expected

