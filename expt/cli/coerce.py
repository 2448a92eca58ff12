"""Command-line values that need no coercion skip typer's pydantic adapters.

typer 0.29 coerces every parameter that is not a bool flag through a pydantic ``TypeAdapter`` built on first use,
even one the command line leaves unset: the first such parameter imports pydantic, about 0.07 s of CPU, a third
of `expt ls`. Most of expt's values are already what the command takes (an unset option, text for a ``str``,
words for a ``list[str]``, digits or a default for an ``int`` in its range) and pass through here as they are;
anything else (a negative number, a path) goes to typer's own coercion, errors and all.

The commands and groups made by :class:`Typer` set typer's lazily built coercion object (``_runtime_param``), a
private attribute of typer's parameters, before typer builds its own. If a typer release renames it, nothing
breaks: pydantic is imported again, and ``tests/test_cli.py::test_read_commands_do_not_import_pydantic`` says so.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

import typer
from typer._click import Context, Parameter
from typer.core import TyperCommand, TyperGroup

_NOT_PLAIN = object()


class PlainValues:
    """A typer parameter's coercion (``coerce(value, param, ctx)``) that returns values needing no coercion as
    they are and hands the others to typer's own, built when first needed."""

    def __init__(self, param: Parameter) -> None:
        self.descriptor = param.type_descriptor
        self.multi = param.multiple or param.nargs == -1
        self.typer_own: Any = None

    def coerce(self, value: Any, param: Parameter, ctx: Context) -> Any:
        if value is None:
            return () if self.multi else None
        plain = self._plain(value)
        if plain is not _NOT_PLAIN:
            return plain
        if self.typer_own is None:
            from typer._coercion import build_runtime_param

            self.typer_own = build_runtime_param(self.descriptor)
        return self.typer_own.coerce(value, param=param, ctx=ctx)

    def _plain(self, value: Any) -> Any:
        annotation, info = self.descriptor.annotation, self.descriptor.parameter_info
        if info.parser is not None:
            return _NOT_PLAIN
        if self.multi:
            words = get_origin(annotation) is list and get_args(annotation) == (str,)
            if words and isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
                return list(value)
        elif annotation is str and type(value) is str:
            return value
        elif annotation is int and (type(value) is int or type(value) is str and value.isascii() and value.isdigit()):
            number = int(value)
            if (info.min is None or number >= info.min) and (info.max is None or number <= info.max):
                return number
        return _NOT_PLAIN


class PlainParams:
    """Gives a command's parameters, its help option included, :class:`PlainValues` coercion as typer asks for
    them (``get_params``: before parsing, and for help)."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "_runtime_param", _NOT_PLAIN) is None and hasattr(param, "type_descriptor"):
                param._runtime_param = PlainValues(param)
        return params


class Command(PlainParams, TyperCommand):
    pass


class Group(PlainParams, TyperGroup):
    pass


class Typer(typer.Typer):
    """typer.Typer whose groups and commands are :class:`Group` and :class:`Command` unless told otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["cls"] = kwargs.get("cls") or Group
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["cls"] = kwargs.get("cls") or Command
        return super().command(*args, **kwargs)
