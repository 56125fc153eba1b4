"""The core runs on CPython, Pyodide and MicroPython: keep it to what all three share.

Checked on the source with ``ast``: the modules import nothing but ``json`` and each
other (``typing`` only under ``if TYPE_CHECKING:``), and use no dataclasses, no enum,
no self-documenting f-strings (``f"{x=}"``) and no ``__all__``.
"""

import ast
import re
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[3] / "web" / "coview"
MODULES = sorted(CORE.glob("*.py"))
NAMES = {path.stem for path in MODULES}
ALLOWED = {"json"}


def test_the_core_is_where_we_think():
    core = {"protocol", "share", "negotiation", "liveness", "reconnect", "quality", "useragent"}
    assert core <= NAMES
    assert "__init__" in NAMES


def tree_of(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def is_type_checking_block(node):
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )


def imports(tree):
    """(module, guarded) for every import; ``guarded`` under ``if TYPE_CHECKING:``."""
    found = []

    def visit(node, guarded):
        for child in ast.iter_child_nodes(node):
            inner = guarded
            if is_type_checking_block(child):
                # Only the body is guarded; an ``else:`` branch runs for real.
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, guarded)
                continue
            visit_stmt(child, inner)

    def visit_stmt(node, guarded):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, guarded))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a sibling module
                for alias in node.names:
                    found.append(("coview." + (node.module or alias.name), guarded))
            else:
                found.append((node.module or "", guarded))
        visit(node, guarded)

    visit(tree, False)
    return found


def internal(module):
    parts = module.split(".")
    return parts[0] == "coview" and (len(parts) == 1 or parts[1] in NAMES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_json_and_each_other(path):
    for module, guarded in imports(tree_of(path)):
        if guarded:
            assert module in ("typing", "collections.abc") or internal(module), module
            continue
        assert module in ALLOWED or internal(module), path.name + " imports " + module
        assert module != "typing", "typing outside TYPE_CHECKING in " + path.name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_type_checking_is_a_plain_false_flag(path):
    tree = tree_of(path)
    guarded = [m for m, g in imports(tree) if g]
    if not guarded:
        return
    assigns = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "TYPE_CHECKING" for t in node.targets)
    ]
    assert len(assigns) == 1
    value = assigns[0].value
    assert isinstance(value, ast.Constant) and value.value is False


FORBIDDEN_NAMES = {"dataclass", "dataclasses", "enum", "Enum", "IntEnum", "StrEnum", "Flag"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_dataclasses_or_enums(path):
    for node in ast.walk(tree_of(path)):
        if isinstance(node, ast.Name):
            assert node.id not in FORBIDDEN_NAMES, (path.name, node.lineno, node.id)
        elif isinstance(node, ast.Attribute):
            assert node.attr not in FORBIDDEN_NAMES, (path.name, node.lineno, node.attr)
        elif isinstance(node, ast.alias):
            assert node.name.split(".")[0] not in FORBIDDEN_NAMES, (path.name, node.name)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_all(path):
    for node in ast.walk(tree_of(path)):
        if isinstance(node, ast.Name):
            assert node.id != "__all__", path.name


# ``{expr=}``, ``{expr = }``, ``{expr=!r}``, ``{expr=:>8}`` but not ``{a == b}``.
SELF_DOCUMENTING = re.compile(r"\{[^{}!:]*[^{}=!<>]=\s*(![rsa])?(:[^{}]*)?\}")


def self_documenting(source):
    return bool(SELF_DOCUMENTING.search(source.replace("{{", "").replace("}}", "")))


def test_the_f_string_detector():
    assert self_documenting('f"{x=}"')
    assert self_documenting('f"{x = }"')
    assert self_documenting('f"{a.b=!r}"')
    assert self_documenting('f"{n=:>8}"')
    assert not self_documenting('f"{x}"')
    assert not self_documenting('f"x={x}"')
    assert not self_documenting('f"{a == b}"')
    assert not self_documenting('f"{a != b}"')
    assert not self_documenting('f"{a <= b}"')
    assert not self_documenting('f"{{x=}}"')


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_self_documenting_f_strings(path):
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            segment = ast.get_source_segment(source, node) or ""
            assert not self_documenting(segment), (path.name, node.lineno, segment)


def test_the_purity_checks_catch_offenders(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\n"
        "import typing\n"
        "from dataclasses import dataclass\n"
        "TYPE_CHECKING = False\n"
        "if TYPE_CHECKING:\n"
        "    from typing import Any\n"
        "else:\n"
        "    import enum\n"
        "from . import protocol\n"
        "x = f'{y=}'\n"
    )
    found = imports(tree_of(bad))
    assert found == [
        ("os", False),
        ("typing", False),
        ("dataclasses", False),
        ("typing", True),
        ("enum", False),
        ("coview.protocol", False),
    ]
    assert self_documenting(bad.read_text())
