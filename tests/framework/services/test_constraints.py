"""Constraint parsing, evaluation per agent, and the pending reasons they give."""

from __future__ import annotations

import pytest

from broker_mesos.framework.planning import CommandError
from broker_mesos.framework.services.constraints import (
    Constraint,
    field_value,
    parse_constraints,
    summary,
    violation,
)


def test_both_spellings_parse_alike() -> None:
    mapping = parse_constraints({"hostname": "UNIQUE", "rack": "CLUSTER:a", "zone": "group_by:3"})
    listed = parse_constraints([["hostname", "UNIQUE"], ["rack", "CLUSTER", "a"], ["zone", "GROUP_BY", 3]])
    assert mapping == listed == (Constraint("hostname", "UNIQUE"), Constraint("rack", "CLUSTER", "a"),
                                 Constraint("zone", "GROUP_BY", "3"))


@pytest.mark.parametrize(("data", "words"), [
    ({"rack": "NEAR"}, "unknown operator"),
    ({"rack": "CLUSTER"}, "needs a value"),
    ({"rack": "UNIQUE:x"}, "takes no value"),
    ({"rack": "GROUP_BY:zero"}, "number of groups"),
    ({"rack": "LIKE:("}, "bad regex"),
    ({"bad field!": "UNIQUE"}, "field"),
    ([["rack"]], "each entry"),
    ("UNIQUE", "expected a mapping"),
])
def test_refusals_name_the_field_and_say_why(data: object, words: str) -> None:
    with pytest.raises(CommandError, match=words):
        parse_constraints(data)


def test_unique() -> None:
    c = Constraint("hostname", "UNIQUE")
    assert violation(c, "h1", ["h2"], {"h1", "h2"}) is None
    assert violation(c, "h1", ["h1"], {"h1"}) == "hostname=h1 already runs an instance"


def test_cluster_like_unlike_and_a_missing_attribute() -> None:
    assert violation(Constraint("rack", "CLUSTER", "a"), "a", [], set()) is None
    assert violation(Constraint("rack", "CLUSTER", "a"), "b", [], set()) is not None
    assert violation(Constraint("rack", "LIKE", "r[0-9]"), "r1", [], set()) is None
    assert violation(Constraint("rack", "LIKE", "r[0-9]"), "r10", [], set()) is not None  # full match
    assert violation(Constraint("rack", "UNLIKE", "r1"), "r1", [], set()) is not None
    assert violation(Constraint("rack", "UNLIKE", "r1"), "r2", [], set()) is None
    for op, value in (("CLUSTER", "a"), ("LIKE", ".*"), ("GROUP_BY", None), ("UNIQUE", None)):
        assert violation(Constraint("rack", op, value), None, [], set()) == "no attribute rack"
    assert violation(Constraint("rack", "UNLIKE", "a"), None, [], set()) is None


def test_group_by_spreads_over_known_groups() -> None:
    c = Constraint("rack", "GROUP_BY")
    assert violation(c, "a", [], {"a", "b"}) is None
    assert violation(c, "a", ["a"], {"a", "b"}) is not None  # b holds none
    assert violation(c, "b", ["a"], {"a", "b"}) is None
    assert violation(c, "a", ["a", "b"], {"a", "b"}) is None


def test_group_by_with_a_count_waits_for_unseen_groups() -> None:
    c = Constraint("rack", "GROUP_BY", "3")
    assert violation(c, "a", ["a", "b"], {"a", "b"}) is not None  # a third rack is expected
    assert violation(c, "c", ["a", "b"], {"a", "b", "c"}) is None


def test_summaries() -> None:
    assert summary(Constraint("hostname", "UNIQUE"), {"h1", "h2"}, ["h1"], 3) == \
        "UNIQUE hostname: 2 agents for 3 instances"
    assert summary(Constraint("rack", "CLUSTER", "a"), {"b"}, [], 1) == \
        "CLUSTER rack:a: no offered agent has rack=a"
    assert "seen: x, y" in summary(Constraint("rack", "LIKE", "z"), {"x", "y"}, [], 1)


def test_field_value() -> None:
    assert field_value("hostname", "h", {"rack": "a"}) == "h"
    assert field_value("rack", "h", {"rack": "a"}) == "a"
    assert field_value("zone", "h", {"rack": "a"}) is None


def test_a_catastrophic_regex_against_a_hostile_value_runs_out_of_time_instead_of_wedging() -> None:
    from broker_mesos.framework.services.constraints import Constraint, violation

    hostile = "a" * 60
    like = violation(Constraint("rack", "LIKE", "(a|aa)+c"), hostile, [], set())
    unlike = violation(Constraint("rack", "UNLIKE", "(a|aa)+c"), hostile, [], set())
    assert like is not None and "took too long to match" in like
    assert unlike is not None and "took too long to match" in unlike  # not placed there either way
    # (without the deadline, re.fullmatch would backtrack for longer than pytest-timeout allows)
