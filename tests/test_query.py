"""The filter language (expt.query): the parser, its caret errors through a real `expt ls --where`, and its two
faces (SQL for runs.db, Python for rows in memory) agreeing on the few-shot study's real runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from conftest import expt
from expt.query import Bool, Compare, Literal, Not, Query, QueryError, Word
from expt.store import Store


@pytest.fixture(scope="module")
def fewshot_copy(fewshot_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The few-shot study copied once for this module, two runs tagged and one noted (through the library)."""
    from expt import bookkeeping

    target = tmp_path_factory.mktemp("query") / "proj"
    shutil.copytree(fewshot_project, target, ignore=shutil.ignore_patterns("runs.db*"))
    with Store(target / "runs.db") as store:
        store.reindex(target / "runs")
        bookkeeping.add_tags(store, store.resolve(["fewshot-1", "fewshot-2"]), ["best", "Paper"])
        bookkeeping.add_tags(store, store.resolve(["fewshot-3"]), ["draft"])
        bookkeeping.set_note(store, store.get("fewshot-2"), "lr too HIGH")
    return target


def test_the_grammar():
    assert Query.parse("resnet status=running").tree == Bool("and", (
        Word("resnet"), Compare("status", "=", (Literal("running", "running"),))))
    assert Query.parse("best_top1 > 80 and mode = 'cbn'").tree == Bool("and", (
        Compare("best_top1", ">", (Literal(80, "80"),)), Compare("mode", "=", (Literal("cbn", "cbn"),))))
    assert Query.parse("a = 1 or not (b in (x, 2.5))").tree == Bool("or", (
        Compare("a", "=", (Literal(1, "1"),)),
        Not(Compare("b", "=", (Literal("x", "x"), Literal(2.5, "2.5"))))))
    assert Query.parse("status:running,failed") == Query.parse("status in (running, failed)")
    assert Query.parse("status=running,failed") == Query.parse("s = running, failed")
    assert Query.parse('note ~ "two words"').tree == Compare("note", "~", (Literal("two words", "two words"),))
    assert Query.parse("x == true").tree == Compare("x", "=", (Literal(True, "true"),))
    assert not Query.parse("   ") and Query.parse("").sql() == ("", [])


@pytest.mark.parametrize("text, message, position", [
    ("best_top1 >", "expected a value after '>'", 11),
    ("mode = 'fc' and", "expected a term after 'and'", 15),
    ("(a = 1", "expected ')'", 6),
    ("a = 1)", "unexpected ')' (no '(' before it)", 5),
    ("a = 'open", "unterminated string starting at '", 4),
    ("a ! 1", "unexpected '!'", 2),
    ("> 3", "expected a name before '>'", 0),
    ("tag > x", "tags compare with = != ~ or in, not '>'", 0),
    ("not", "expected a term after 'not'", 3),
    ("or a", "expected a term before 'or'", 0),
])
def test_bad_expressions_say_where(text: str, message: str, position: int):
    with pytest.raises(QueryError) as caught:
        Query.parse(text)
    error = caught.value
    assert str(error) == f"--where: {message}" and error.position == position and error.exit_code == 2
    assert error.caret() == f"{text}\n{' ' * position}^"


def test_a_bad_expression_is_one_line_and_a_caret_from_the_real_cli(fewshot_copy: Path):
    text = "best_top1 > 80 and (mode ="
    result = expt("ls", "--where", text, cwd=fewshot_copy)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == ["error: --where: expected a value after '='", f"  {text}",
                                          " " * (2 + len(text)) + "^"]
    result = expt("ls", "--where", "best_top1 > 0.5 and mode = 'fc'", "--json", cwd=fewshot_copy)
    assert result.returncode == 0, result.stderr


EXPRESSIONS = [
    "mode = fc", "mode = 'e2e' and shots = 2", "shots > 1", "shots >= 1 and shots <= 1", "shots != 2",
    "mode != fc or shots = 1", "not mode = fc", "not (mode = fc or shots = 2)", "mode in (fc, e2e) shots < 2",
    "best_top1 > 10", "summary.best_top1 <= 50", "params.best_top1 > 0", "best_epoch = 1, 2", "mode = 1",
    "shots = fc", "shots > 'a'", "mode < 'f'", "mode ~ F", "id ~ SHOT-1", "fewshot-1", "E2E", "'\"mode\":\"fc\"'",
    "status = completed", "s:completed,failed", "experiment = fewshot", "e = nope", "recipe = finetune",
    "error = x", "not error = x", "error != x", "host ~ ''", "device = cpu", "description ~ study",
    "tag = best", "tag = paper", "tag ~ paper", "tag != best", "tags in (draft, best)", "not tag = draft",
    "best", "note ~ high", "note = ''", "note != ''", "missing = 1", "not missing = 1", "missing != 1",
    "lr > 0.001", "pretrained = false", "pretrained = true", "pretrained = 0", "seed >= 0 and not seed > 100",
    "(mode = fc and shots = 1) or (mode = e2e and shots = 2)", "mode = fc mode = e2e",
]


def test_sql_and_python_agree_on_real_runs(fewshot_copy: Path):
    with Store(fewshot_copy / "runs.db") as store:
        runs = store.runs()
        assert len(runs) == 8 and {r.status for r in runs} == {"completed"}
        nonempty = 0
        for text in EXPRESSIONS:
            query = Query.parse(text)
            by_sql = [r.id for r in store.runs(*query.sql())]
            by_python = [r.id for r in runs if query.matches(r)]
            assert by_sql == by_python, text
            nonempty += 0 < len(by_sql) < len(runs)
        assert nonempty >= 25  # most expressions split the runs, so the agreement says something
        ids = lambda text: {r.id for r in store.runs(*Query.parse(text).sql())}  # noqa: E731
        assert ids("tag = best") == {"fewshot-1", "fewshot-2"} and ids("tag = paper") == set()
        assert ids("tag ~ paper") == {"fewshot-1", "fewshot-2"} and ids("note ~ high") == {"fewshot-2"}
        assert ids("mode = 1") == set() and ids("shots = fc") == set() and ids("missing != 1") == set()
        assert len(ids("not missing = 1")) == 8


def test_where_keeps_the_runs_whose_summary_says_so(fewshot_copy: Path, cli, monkeypatch):
    monkeypatch.chdir(fewshot_copy)
    with Store(fewshot_copy / "runs.db") as store:
        runs = store.runs()
    values = sorted(r.summary["best_top1"] for r in runs if r.params["mode"] == "fc")
    threshold = values[len(values) // 2 - 1]
    expected = sorted(r.id for r in runs if r.params["mode"] == "fc" and r.summary["best_top1"] > threshold)
    shown = cli.json("ls", "--where", f"best_top1 > {threshold} and mode = 'fc'")
    assert sorted(r["id"] for r in shown) == expected and expected
    assert all(r["summary"]["best_top1"] > threshold and r["params"]["mode"] == "fc" for r in shown)
    # with refs too (the Python face), and through export and compare
    assert sorted(r["id"] for r in cli.json("ls", "fewshot", "--where", f"best_top1 > {threshold} and mode = fc")) \
        == expected
    result = cli("export", "--where", "mode = fc", "--tag", "best", "-F", "json")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in orjson.loads(result.stdout)] == [r.id for r in runs if r.params["mode"] == "fc"
                                                               and r.id in ("fewshot-1", "fewshot-2")]
    data = cli.json("compare", "fewshot", "--where", "shots = 2")
    assert len(data["curves"][next(iter(data["curves"]))]) == 4
