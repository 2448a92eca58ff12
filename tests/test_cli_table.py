"""expt.cli.table: the runs table of `expt ls` as one Text, columns aligned, the params folded to the width."""

from __future__ import annotations

from rich.text import Text

from expt.cli.table import Column, table_text

COLUMNS = (Column("id", style="bold"), Column("status"), Column("params", fold=True), Column("best", right=True))


def _lines(text: Text) -> list[str]:
    return text.plain.split("\n")


def test_columns_are_aligned_two_spaces_apart_without_trailing_spaces():
    rows = [("a-1", Text("completed", style="green"), "lr=0.1", "9.5"), ("a-10", "failed", "lr=0.01 seed=2", "")]
    assert _lines(table_text(COLUMNS, rows, width=80)) == [
        "id    status     params          best",
        "a-1   completed  lr=0.1           9.5",
        "a-10  failed     lr=0.01 seed=2",
    ]


def test_styles_of_columns_and_cells_are_kept():
    text = table_text(COLUMNS, [("a-1", Text("completed", style="green"), "lr=0.1", "9.5")], width=80)
    styled = {text.plain[span.start:span.end]: str(span.style) for span in text.spans}
    assert styled["a-1"] == "bold" and styled["completed"] == "green" and styled["id"] == "bold"


def test_the_folding_column_narrows_to_the_width_and_goes_on_below():
    rows = [("a-1", "ok", "model=resnet50 lr=0.001 shots=10 seed=3", "9.5")]
    lines = _lines(table_text(COLUMNS, rows, width=34))
    assert max(len(line) for line in lines) <= 34
    assert lines[1].startswith("a-1  ok      ") and lines[1].endswith("9.5")
    assert " ".join(line[13:].split("  ")[0].strip() for line in lines[1:]) == "model=resnet50 lr=0.001 shots=10 seed=3"


def test_a_word_longer_than_the_column_is_cut_and_wide_characters_count_double():
    rows = [("a-1", "ok", "x" * 20, ""), ("b-2", "ok", "名前=実験", "")]
    lines = _lines(table_text(COLUMNS, rows, width=22))
    assert [line[13:] for line in lines[1:4]] == ["xxxxxxxx", "xxxxxxxx", "xxxx"]
    assert "名前=実" in lines[4] and lines[5].endswith("験")
