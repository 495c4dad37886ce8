"""The one markdown-table renderer."""

from hedge_pipeline.runtime.markdown import markdown_table


def test_numbers_right_aligned_from_the_given_column():
    table = markdown_table(["hedger", "price", "es10"], [["bs", 1.5, "0.1"]], right_from=1)
    assert table.splitlines() == [
        "| hedger | price | es10 |",
        "| --- | ---: | ---: |",
        "| bs | 1.5 | 0.1 |",
    ]


def test_left_aligned_by_default():
    assert markdown_table(["a"], []).splitlines() == ["| a |", "| --- |"]
