"""Options in either place (``cli.main.hoist_options``): each option moves to the command line level
that accepts it, and nothing that is a command's own argument moves."""

from __future__ import annotations

import pytest

from broker_mesos.cli.main import hoist_options


@pytest.mark.parametrize(("given", "parsed"), [
    ("admin --broker U acl show", "admin acl show --broker U"),
    ("admin acl show --broker U", "admin acl show --broker U"),
    ("admin --broker=U --json acl show", "admin acl show --broker=U --json"),
    ("admin --timeout 3 role set web --weight 2", "admin role set --timeout 3 web --weight 2"),
    ("principals list --admin-url X --json", "principals --admin-url X list --json"),
    ("principals --admin-url X add agent a1 --output-dir D", "principals --admin-url X add agent a1 --output-dir D"),
    ("principals add agent a1 --vhost v", "principals --vhost v add agent a1"),
    ("--broker U status -o json", "status --broker U -o json"),
    ("describe --timeout 2 task abc --broker U", "describe task --timeout 2 abc --broker U"),
])
def test_options_move_to_the_level_that_takes_them(given: str, parsed: str) -> None:
    assert hoist_options(given.split()) == parsed.split()


@pytest.mark.parametrize("args", [
    "run --cpus 8 --broker U -- echo --broker x",  # after --: the task's command
    "run --cpus 1 echo --broker x",  # run takes no options after its first argument
    "admin --no-such-option acl show",  # nobody knows it: click says so
    "watch --help",
    "admin --help acl",
    "nosuch --broker U",
])
def test_what_must_not_move_stays(args: str) -> None:
    assert hoist_options(args.split()) == args.split()


@pytest.mark.parametrize("args", ["agents -ojson --limit 3", "admin acl show --bogus --json"])
def test_an_unknown_option_of_a_leaf_stays_in_place(args: str) -> None:
    assert hoist_options(args.split()) == args.split()
