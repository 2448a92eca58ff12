"""expt.cli.coerce: values that need no coercion skip typer's pydantic adapters and come out as typer's own."""

from __future__ import annotations

import pytest
import typer.main
from typer._click import Context
from typer._coercion import build_runtime_param

from expt.cli import app
from expt.cli.coerce import PlainValues

VALUES = [None, (), ["a"], ("a", "b"), "a", "", "3", "007", "-1", "x", 0, 5, 30, 10**6, True, 2.5]


def _parameters():
    root = typer.main.get_command(app)
    groups = [root]
    while groups:
        group = groups.pop()
        ctx = Context(group)
        yield from ((f"{group.name} {p.name}", p) for p in group.get_params(ctx))
        for command in group.commands.values():
            if hasattr(command, "commands"):
                groups.append(command)
            else:
                yield from ((f"{command.name} {p.name}", p) for p in command.get_params(Context(command)))


def _outcome(runtime, value, param, ctx):
    try:
        return "value", runtime.coerce(value, param=param, ctx=ctx)
    except Exception as error:  # noqa: BLE001  (the same error, whichever coerces)
        return "error", type(error).__name__, str(error)


@pytest.mark.parametrize("name,param", list(_parameters()), ids=lambda x: x if isinstance(x, str) else "")
def test_plain_values_coerce_as_typer_does(name, param):
    assert isinstance(param._runtime_param, PlainValues), name
    ctx = Context(typer.main.get_command(app))
    for value in VALUES:
        plain = _outcome(param._runtime_param, value, param, ctx)
        own = _outcome(build_runtime_param(param.type_descriptor), value, param, ctx)
        assert plain == own, (name, value)
