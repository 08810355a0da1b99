"""Documentation that runs: the README's library example (the modules' docstring examples run
as doctests, see ``pyproject.toml``)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text[text.index(f"\n## {section}\n"):]
    body = body[:body.find("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_readme_library_example_runs_and_agrees_with_dense():
    (block,) = _python_blocks("Library")
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 — our own README
    spec, top, tr = namespace["spec"], namespace["top"], namespace["tr"]
    assert float(top.eigenvalues[0]) == pytest.approx(float(spec.eigenvalues[-1]), rel=1e-8)
    assert abs(tr.value - float(spec.eigenvalues.sum())) <= 4 * tr.stderr + 1e-10
    saddle = namespace["saddle"]
    assert saddle.status == "critical" and saddle.n_negative == 1
    assert "critical at n_negative = 1" in out.getvalue()
