"""Static check of the SQL adapters: values reach SQL only as named parameters, never formatted in."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ADAPTERS = Path(__file__).resolve().parents[2] / "pixyproxy" / "adapters"
SQL_MODULES = sorted([*ADAPTERS.glob("sqlite*.py"), *(ADAPTERS / "mysql").glob("*.py")])
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|KILL|LOCK)\b")


def _execute_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"execute", "executemany"}
        and node.args
    ]


def _formats_text(node: ast.expr) -> bool:
    """Whether an expression builds text by interpolation: f-strings, `%` or `.format()`."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.JoinedStr):
            return True
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mod):
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "format":
            return True
    return False


@pytest.mark.parametrize("module", SQL_MODULES, ids=lambda p: p.name)
def test_statements_are_never_built_by_string_formatting(module: Path) -> None:
    tree = ast.parse(module.read_text())
    calls = _execute_calls(tree)
    assert calls or module.name in {"__init__.py", "connection.py"}
    for call in calls:
        assert not _formats_text(call.args[0]), f"{module.name}:{call.lineno} formats text into SQL"
    # Nor are module-level SQL strings: every constant naming a statement is plain text.
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
            assert not SQL_WORDS.search(text), f"{module.name}:{node.lineno} has an f-string with SQL"


@pytest.mark.parametrize("module", SQL_MODULES, ids=lambda p: p.name)
def test_placeholders_are_named(module: Path) -> None:
    tree = ast.parse(module.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_WORDS.search(node.value):
            # Positional placeholders (`%s`, `?`) would tie values to their order; names cannot be mixed up.
            assert not re.search(r"%s|\?", node.value), f"{module.name}:{node.lineno}: {node.value!r}"
