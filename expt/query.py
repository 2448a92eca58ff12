"""The filter language of `expt ls --where`, `--tag` and the TUI's `/`: parsed by hand, never evaluated as Python.

Grammar (keywords ``and``, ``or``, ``not``, ``in`` are lower case)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr (["and"] not_expr)*          juxtaposition is "and": `resnet status=running`
    not_expr   := "not" not_expr | "(" expr ")" | comparison | word
    comparison := name OP value ("," value)*           OP: = == != < <= > >= ~   (a list after = means any of)
                | name "in" "(" value ("," value)* ")"
                | name:value                           the TUI's old form of name=value
    name       := id | experiment (exp, e) | status (s) | recipe | tag (tags) | note | host | device | error
                | description | params.KEY | summary.KEY | KEY (params.KEY where the run sets it, else summary.KEY)
    value      := number | 'single' or "double" quoted string | bare word | true | false
    word       := a bare word or quoted string alone: a case-insensitive substring of the run's id,
                  experiment, status, params (as JSON text) or tags

Semantics: a comparison on a key the run does not have is false (``!=`` too); numbers compare as numbers and
strings as strings; a number never equals a string and never orders against one. ``~`` is a case-insensitive
substring (ASCII case folding, as SQLite's ``lower``). ``tag = x`` holds when x is one of the run's tags,
``tag ~ x`` when one contains x. ``note`` is "" when a run has none.

One ``Query`` has two faces that agree (tests/test_query.py checks it on real runs): ``sql()``, a WHERE condition
for ``Store.runs/page/count`` (json_extract on the params, summary and tags columns), and ``matches(run)`` in
Python, for rows already in memory. A bad expression raises ``QueryError`` with the position of the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from expt.errors import UsageError

COLUMNS = {"id": "id", "experiment": "experiment", "exp": "experiment", "e": "experiment", "status": "status",
           "s": "status", "recipe": "recipe", "host": "host", "device": "device", "error": "error",
           "description": "description", "note": "note"}
TAG_NAMES = ("tag", "tags")
OPS = ("==", "!=", "<=", ">=", "=", "<", ">", "~")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*\Z")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
_BARE = re.compile(r"[^\s()<>=!~,'\"]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NUMERIC_TYPES = "('integer', 'real', 'true', 'false')"
_WORD_HAYSTACK = "lower(id || ' ' || experiment || ' ' || status || ' ' || params || ' ' || tags)"


class QueryError(UsageError):
    """A bad filter expression: ``str()`` is the one-line message, ``position`` where in ``expression``."""

    def __init__(self, message: str, expression: str, position: int, source: str = "--where"):
        self.message, self.expression, self.position, self.source = message, expression, position, source
        super().__init__(f"{source}: {message}")

    def caret(self) -> str:
        """Two lines: the expression and a caret under the problem (control codes shown escaped)."""
        shown = self.expression.encode("unicode_escape").decode("ascii") if not self.expression.isprintable() \
            else self.expression
        prefix = self.expression[: self.position]
        pad = len(prefix.encode("unicode_escape").decode("ascii")) if not prefix.isprintable() else len(prefix)
        return f"{shown}\n{' ' * pad}^"


def ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


# -- the tree ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Literal:
    value: Any  # int, float, bool or str
    text: str   # as typed (what ~ and tags compare with)


@dataclass(frozen=True)
class Compare:
    name: str   # a column, "tag", "params.X", "summary.X" or a bare key
    op: str
    values: tuple[Literal, ...]  # several: any of (= with a list, in)


@dataclass(frozen=True)
class Word:
    text: str


@dataclass(frozen=True)
class Not:
    term: Any


@dataclass(frozen=True)
class Bool:
    op: str  # "and" | "or"
    terms: tuple[Any, ...]


# -- parsing ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    kind: str  # word, string, op, "(", ")", ",", end
    text: str
    pos: int


def _tokens(text: str, source: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            out.append(_Token(ch, ch, i))
            i += 1
        elif ch in "'\"":
            end = text.find(ch, i + 1)
            if end < 0:
                raise QueryError(f"unterminated string starting at {ch}", text, i, source)
            out.append(_Token("string", text[i + 1:end], i))
            i = end + 1
        elif op := next((op for op in OPS if text.startswith(op, i)), None):
            out.append(_Token("op", op, i))
            i += len(op)
        elif match := _BARE.match(text, i):
            out.append(_Token("word", match.group(), i))
            i = match.end()
        else:
            raise QueryError(f"unexpected {ch!r}", text, i, source)
    out.append(_Token("end", "", n))
    return out


class _Parser:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self.tokens = _tokens(text, source)
        self.i = 0

    def error(self, message: str, token: _Token | None = None) -> QueryError:
        return QueryError(message, self.text, (token or self.peek()).pos, self.source)

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.i += 1
        return token

    def keyword(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "word" and token.text == word

    def parse(self) -> Any:
        if self.peek().kind == "end":
            return None
        tree = self.expr()
        token = self.peek()
        if token.kind != "end":
            raise self.error(f"unexpected {token.text!r}" if token.text != ")" else "unexpected ')' (no '(' before it)")
        return tree

    def expr(self) -> Any:
        terms = [self.and_expr()]
        while self.keyword("or"):
            self.take()
            if self.peek().kind in ("end", ")"):
                raise self.error("expected a term after 'or'")
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else Bool("or", tuple(terms))

    def and_expr(self) -> Any:
        terms = [self.not_expr()]
        while True:
            if self.keyword("and"):
                self.take()
                if self.peek().kind in ("end", ")") or self.keyword("or"):
                    raise self.error("expected a term after 'and'")
            elif self.peek().kind in ("end", ")") or self.keyword("or"):
                break
            terms.append(self.not_expr())
        return terms[0] if len(terms) == 1 else Bool("and", tuple(terms))

    def not_expr(self) -> Any:
        token = self.peek()
        if self.keyword("not"):
            self.take()
            if self.peek().kind in ("end", ")") or self.keyword("and") or self.keyword("or"):
                raise self.error("expected a term after 'not'")
            return Not(self.not_expr())
        if token.kind == "(":
            self.take()
            if self.peek().kind == ")":
                raise self.error("expected a term inside '( )'")
            tree = self.expr()
            if self.peek().kind != ")":
                raise self.error("expected ')'" if self.peek().kind == "end" else
                                 f"expected ')' before {self.peek().text!r}")
            self.take()
            return tree
        if token.kind == "word" and token.text in ("and", "or"):
            raise self.error(f"expected a term before '{token.text}'")
        if token.kind == "word":
            following = self.peek(1)
            if following.kind == "op" or (following.kind == "word" and following.text == "in"
                                          and self.peek(2).kind == "("):
                return self.comparison()
            key, colon, rest = token.text.partition(":")
            if colon and _NAME.match(key):
                self.take()
                return self.colon_form(token, key, rest)
            self.take()
            return Word(token.text)
        if token.kind == "string":
            self.take()
            return Word(token.text)
        if token.kind == "op":
            raise self.error(f"expected a name before '{token.text}'")
        if token.kind == ",":
            raise self.error("unexpected ','")
        if token.kind == ")":
            raise self.error("unexpected ')' (no '(' before it)")
        raise self.error("expected a term")

    def name(self, token: _Token) -> str:
        if not _NAME.match(token.text):
            raise self.error(f"{token.text!r} is not a name (names look like best_top1, params.lr, status)", token)
        name = token.text
        for prefix in ("params.", "summary."):
            if name.startswith(prefix) and len(name) == len(prefix):
                raise self.error(f"expected a key after {prefix!r}", token)
        return name

    def value(self, after: _Token) -> Literal:
        token = self.peek()
        if token.kind == "string":
            self.take()
            return Literal(token.text, token.text)
        if token.kind == "word" and token.text not in ("and", "or", "not"):
            self.take()
            return _literal(token.text)
        raise self.error(f"expected a value after '{after.text}'")

    def values(self, first_after: _Token) -> tuple[Literal, ...]:
        values = [self.value(first_after)]
        while self.peek().kind == ",":
            comma = self.take()
            values.append(self.value(comma))
        return tuple(values)

    def comparison(self) -> Compare:
        name_token = self.take()
        name = self.name(name_token)
        token = self.take()
        if token.kind == "word":  # in ( ... )
            self.take()
            values = self.values(self.tokens[self.i - 1])
            if self.peek().kind != ")":
                raise self.error("expected ')' to close the list after 'in'")
            self.take()
            return self.check(Compare(name, "=", values), name_token)
        op = "=" if token.text == "==" else token.text
        if op == "=":
            return self.check(Compare(name, op, self.values(token)), name_token)
        return self.check(Compare(name, op, (self.value(token),)), name_token)

    def colon_form(self, token: _Token, key: str, rest: str) -> Compare:
        values: list[Literal] = []
        if rest:
            values.append(_literal(rest))
        else:
            values.append(self.value(_Token("op", ":", token.pos)))
        while self.peek().kind == ",":
            comma = self.take()
            values.append(self.value(comma))
        return self.check(Compare(key, "=", tuple(values)), token)

    def check(self, compare: Compare, token: _Token) -> Compare:
        if compare.name in TAG_NAMES and compare.op not in ("=", "!=", "~"):
            raise self.error(f"tags compare with = != ~ or in, not '{compare.op}'", token)
        name = "tag" if compare.name in TAG_NAMES else COLUMNS.get(compare.name, compare.name)  # aliases: one tree
        return Compare(name, compare.op, compare.values)


def _literal(text: str) -> Literal:
    if text in ("true", "false"):
        return Literal(text == "true", text)
    if _NUMBER.match(text):
        number = float(text) if any(c in text for c in ".eE") else int(text)
        return Literal(number, text)
    return Literal(text, text)


# -- evaluating -------------------------------------------------------------------------------------------

_MISSING = object()


def _is_number(value: Any) -> bool:
    return type(value) in (int, float, bool)


def _compare(value: Any, op: str, literal: Literal) -> bool:
    if value is _MISSING or value is None:
        return False
    if op == "~":
        return isinstance(value, str) and ascii_lower(literal.text) in ascii_lower(value)
    if op == "!=":
        return not _compare(value, "=", literal)
    wanted = literal.value
    if _is_number(wanted):
        if not _is_number(value):
            return False
    elif not isinstance(value, str):
        return False
    if op == "=":
        return value == wanted
    return {"<": value < wanted, "<=": value <= wanted, ">": value > wanted, ">=": value >= wanted}[op]


def _lookup(run: Any, name: str) -> Any:
    if name in COLUMNS:
        return getattr(run, COLUMNS[name])
    if name.startswith("params."):
        return run.params.get(name[7:], _MISSING)
    if name.startswith("summary."):
        return run.summary.get(name[8:], _MISSING)
    value = run.params.get(name)
    return value if value is not None else run.summary.get(name, _MISSING)


def _matches(tree: Any, run: Any) -> bool:
    if isinstance(tree, Bool):
        return (all if tree.op == "and" else any)(_matches(term, run) for term in tree.terms)
    if isinstance(tree, Not):
        return not _matches(tree.term, run)
    if isinstance(tree, Word):
        haystack = " ".join((run.id, run.experiment, run.status, _json(run.params), _json(run.tags)))
        return ascii_lower(tree.text) in ascii_lower(haystack)
    if tree.name in TAG_NAMES:
        if tree.op == "!=":
            return tree.values[0].text not in run.tags
        if tree.op == "~":
            return any(ascii_lower(tree.values[0].text) in ascii_lower(tag) for tag in run.tags)
        return any(v.text in run.tags for v in tree.values)
    value = _lookup(run, tree.name)
    return any(_compare(value, tree.op, literal) for literal in tree.values)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _path(key: str) -> str:
    return f'$."{key}"'


def _sql_value(name: str) -> tuple[str, list[Any], str, list[Any]]:
    """(value expression, its args, JSON type expression, its args) of a name; a text column's type is 'text'."""
    if name in COLUMNS:
        column = COLUMNS[name]
        return column, [], f"(CASE WHEN {column} IS NULL THEN NULL ELSE 'text' END)", []
    for prefix, column in (("params.", "params"), ("summary.", "summary")):
        if name.startswith(prefix):
            path = _path(name[len(prefix):])
            return f"json_extract({column}, ?)", [path], f"json_type({column}, ?)", [path]
    path = _path(name)
    value = ("(CASE WHEN json_extract(params, ?) IS NOT NULL THEN json_extract(params, ?) "
             "ELSE json_extract(summary, ?) END)")
    kind = "(CASE WHEN json_extract(params, ?) IS NOT NULL THEN json_type(params, ?) ELSE json_type(summary, ?) END)"
    return value, [path] * 3, kind, [path] * 3


def _sql_compare(name: str, op: str, literal: Literal) -> tuple[str, list[Any]]:
    value, value_args, kind, kind_args = _sql_value(name)
    if op == "~":
        return (f"({kind} = 'text' AND instr(lower({value}), ?) > 0)",
                [*kind_args, *value_args, ascii_lower(literal.text)])
    if op == "!=":
        equal, args = _sql_compare(name, "=", literal)
        return f"({kind} IS NOT NULL AND {kind} != 'null' AND NOT {equal})", [*kind_args, *kind_args, *args]
    wanted = literal.value
    if _is_number(wanted):
        wanted = int(wanted) if isinstance(wanted, bool) else wanted
        return f"({kind} IN {_NUMERIC_TYPES} AND {value} {op} ?)", [*kind_args, *value_args, wanted]
    return f"({kind} = 'text' AND {value} {op} ?)", [*kind_args, *value_args, wanted]


def _sql(tree: Any) -> tuple[str, list[Any]]:
    """Every term is 0 or 1, never NULL, so ``not`` and ``or`` mean in SQL what they mean in Python."""
    if isinstance(tree, Bool):
        parts = [_sql(term) for term in tree.terms]
        return "(" + f" {tree.op.upper()} ".join(p for p, _ in parts) + ")", [a for _, args in parts for a in args]
    if isinstance(tree, Not):
        text, args = _sql(tree.term)
        return f"(NOT {text})", args
    if isinstance(tree, Word):
        return f"(instr({_WORD_HAYSTACK}, ?) > 0)", [ascii_lower(tree.text)]
    if tree.name in TAG_NAMES:
        each = "EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE "
        if tree.op == "!=":
            return f"(NOT {each}value = ?))", [tree.values[0].text]
        if tree.op == "~":
            return f"({each}instr(lower(value), ?) > 0))", [ascii_lower(tree.values[0].text)]
        return (f"({each}value IN ({', '.join('?' * len(tree.values))})))", [v.text for v in tree.values])
    parts = [_sql_compare(tree.name, tree.op, literal) for literal in tree.values]
    return ("COALESCE((" + " OR ".join(p for p, _ in parts) + "), 0)", [a for _, args in parts for a in args])


@dataclass(frozen=True)
class Query:
    """A parsed filter; the empty one matches every run."""

    tree: Any = None
    text: str = ""

    @classmethod
    def parse(cls, text: str, source: str = "--where") -> Query:
        return cls(_Parser(text, source).parse(), text)

    @classmethod
    def tags(cls, tags: list[str]) -> Query:
        """Runs that have every one of ``tags`` (``expt ls --tag A --tag B``)."""
        terms = tuple(Compare("tag", "=", (Literal(tag, tag),)) for tag in tags)
        return cls(None if not terms else terms[0] if len(terms) == 1 else Bool("and", terms))

    def __and__(self, other: Query) -> Query:
        if self.tree is None or other.tree is None:
            return other if self.tree is None else self
        return Query(Bool("and", (self.tree, other.tree)), f"({self.text}) and ({other.text})")

    def __bool__(self) -> bool:
        return self.tree is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Query) and self.tree == other.tree

    def __hash__(self) -> int:
        return hash(self.tree)

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE condition for ``Store.runs/page/count`` and its arguments ("" when everything matches)."""
        if self.tree is None:
            return "", []
        return _sql(self.tree)

    def matches(self, run: Any) -> bool:
        """The same test as ``sql()``, on a run in memory."""
        return self.tree is None or _matches(self.tree, run)
