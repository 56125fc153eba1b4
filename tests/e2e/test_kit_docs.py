"""docs/testing.md shows the example suite exactly as it runs (test_kit_example.py)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "testing.md"


def test_the_documented_example_is_the_suite_that_runs() -> None:
    example = (HERE / "test_kit_example.py").read_text()
    assert f"```python\n{example}```\n" in DOC.read_text()
