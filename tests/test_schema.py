"""Shared names are spelled once, in ``celery_singleton_beat/core/schema.py``."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_singleton_beat.core.schema import (
    ClaimStatus,
    Header,
    Keys,
    Mode,
    Outcome,
    Role,
    RunStatus,
    SkipReason,
    enqueue_lock,
    lock_kind,
    ran_lock,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "celery_singleton_beat", ROOT / "django_app" / "django_celery_singleton_beat"]
SCHEMA = ROOT / "celery_singleton_beat" / "core" / "schema.py"
KEY_STARTS = ("lock:", "fence:", "entry:", "anchor:", "fire:", "replica:", "ran:", "enqueue:")
KEY_STARTS += ("runstate:", "schedule:")
KEY_STARTS += ("singleton-beat:",)
#: names that are keys only after a prefix (alone, "replicas" is also a JSON field)
PREFIXED_STARTS = (*KEY_STARTS, "replicas")
HEADERS = {h.value for h in Header}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            found.add(id(body[0].value))
    return found


def _prefixed(tree: ast.AST) -> set[int]:
    """The f-string parts that follow a formatted value (``f"{prefix}replicas"``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for before, part in zip(node.values, node.values[1:], strict=False):
                if isinstance(before, ast.FormattedValue):
                    found.add(id(part))
    return found


def _strings(tree: ast.AST) -> Iterator[tuple[int, str, bool]]:
    """Every string literal outside docstrings, and every literal part of an f-string,
    with whether it follows a formatted value."""
    skip, prefixed = _docstrings(tree), _prefixed(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value, id(node) in prefixed


def spelled_names(root: Path) -> list[str]:
    """``path:line: text`` of each key or header name spelled outside the schema module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == SCHEMA or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for line, text, prefixed in sorted(_strings(tree)):
            key = text.startswith(PREFIXED_STARTS if prefixed else KEY_STARTS)
            if key or text in HEADERS:
                found.append(f"{path.relative_to(root.parent)}:{line}: {text!r}")
    return found


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_no_key_or_header_name_is_spelled_outside_the_schema_module(package: Path) -> None:
    assert spelled_names(package) == []


def test_the_checker_finds_a_key_built_by_hand(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        '"""entry:{name} in a docstring is fine."""\n'
        "def key(prefix, name):\n"
        '    return f"{prefix}entry:{name}", f"{prefix}replicas", {"replicas": 1}\n'
        'HEADER = "singleton_beat_slot"\n'
    )
    assert spelled_names(package) == [
        "pkg/mod.py:3: 'entry:'",
        "pkg/mod.py:3: 'replicas'",
        "pkg/mod.py:4: 'singleton_beat_slot'",
    ]


def test_every_key_is_under_the_prefix() -> None:
    keys = Keys("p:")
    assert [
        keys.lock("leader"), keys.fence("job"), keys.entry("e"), keys.anchor("e", 60_000),
        keys.slot("e", 1_000), keys.replica("h:1"), keys.replicas, keys.all_locks,
    ] == [
        "p:lock:leader", "p:fence:job", "p:entry:e", "p:anchor:e:60000",
        "p:fire:e:1000", "p:replica:h:1", "p:replicas", "p:lock:*",
    ]  # fmt: skip


def test_lock_names_say_what_they_are_for() -> None:
    names = ["leader", ran_lock("e", "2026-01-01T00:00:00.000Z"), enqueue_lock("t:ab"), "t:ab"]
    assert [lock_kind(n) for n in names] == ["beat leader", "slot ran", "enqueue", "task"]


def test_an_enum_member_is_its_stored_value_in_dicts_json_and_text() -> None:
    headers = {"singleton_beat_entry": "e"}
    assert headers.get(Header.ENTRY) == "e"
    assert {Outcome.DISPATCHED: 1}.get("dispatched") == 1
    assert json.dumps({Header.SLOT: SkipReason.MISFIRE}) == '{"singleton_beat_slot": "misfire"}'
    assert f"{Role.STANDBY} {Mode.LEADER} {ClaimStatus.HELD}" == "standby leader held"
    assert RunStatus("lock_lost") is RunStatus.LOCK_LOST
