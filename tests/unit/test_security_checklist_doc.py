"""docs/security-checklist.md and the tests stay in step: every checklist id a test name
carries has an entry, every test an entry cites exists, and every entry is proved by a
test or says that it is not yet. An entry is a table row `| id | what it proves | test(s) |
note |`: the tests that prove it are the ones in its test(s) column, and a test its note
names must exist too. The test files are parsed, never imported."""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security-checklist.md"
TESTS = ROOT / "tests"
NOT_YET = "## Not yet proved by a test"

ROW = re.compile(r"^\|\s*([A-Z]{2}-\d{2}[a-z]?)\s*\|(.*)\|\s*$")
CELLS = re.compile(r"(?<!\\)\|")
"""A cell boundary: a pipe not escaped as `\\|`."""
ENTRY_CELLS = 3
"""After the id: what it proves, test(s), note."""
CITATION = re.compile(r"`(tests/[\w/.-]+\.py)::(test_\w+)`")
IDS_IN_NAME = re.compile(r"^test_((?:[a-z]{2}\d{2}[a-z]?_)+)")
"""A test proving a row starts with `test_<id>_`, one or more ids in turn
(`test_rt01_rt02_…`)."""


@dataclass(frozen=True)
class Entry:
    id: str
    cells: int
    """How many cells follow the id."""
    citations: tuple[tuple[str, str], ...]
    """(path, test name) pairs of the test(s) column: the tests that prove the entry."""
    mentioned: tuple[tuple[str, str], ...]
    """(path, test name) pairs named elsewhere in the row, in its note most of all."""


def name_id(entry_id: str) -> str:
    """`RT-01` as a test name carries it: `rt01`."""
    return entry_id.replace("-", "").lower()


@cache
def doc_parts() -> tuple[list[Entry], list[str]]:
    """The entries above the "not yet proved" section, and the ids listed in it."""
    text = DOC.read_text(encoding="utf-8")
    checklist, _, not_yet = text.partition(NOT_YET)
    entries = []
    for line in checklist.splitlines():
        row = ROW.match(line)
        if row:
            cells = CELLS.split(row.group(2))
            tests = cells[1] if len(cells) > 1 else ""
            others = " ".join(cells[:1] + cells[2:])
            entries.append(
                Entry(
                    row.group(1),
                    len(cells),
                    tuple(CITATION.findall(tests)),
                    tuple(CITATION.findall(others)),
                )
            )
    unproved = [row.group(1) for line in not_yet.splitlines() if (row := ROW.match(line))]
    return entries, unproved


@cache
def defined_tests() -> dict[str, set[str]]:
    """Each file under tests/ (relative to the repository) and the test functions it defines."""
    defined: dict[str, set[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        defined[path.relative_to(ROOT).as_posix()] = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        }
    return defined


def doc_id(carried: str) -> str:
    """`rt01` as the page writes it: `RT-01`."""
    return f"{carried[:2].upper()}-{carried[2:]}"


def ids_carried(test_name: str) -> list[str]:
    found = IDS_IN_NAME.match(test_name)
    return found.group(1).strip("_").split("_") if found else []


def carriers() -> dict[str, set[tuple[str, str]]]:
    """Each id carried by a test name, and the tests carrying it."""
    carrying: dict[str, set[tuple[str, str]]] = {}
    for path, names in defined_tests().items():
        for name in names:
            for checklist_id in ids_carried(name):
                carrying.setdefault(checklist_id, set()).add((path, name))
    return carrying


def test_each_id_has_exactly_one_entry() -> None:
    entries, _ = doc_parts()
    assert len(entries) > 100, "the page's entries were not found: has the row format changed?"
    repeated = [i for i, n in Counter(e.id for e in entries).items() if n > 1]
    assert not repeated, f"ids with more than one entry: {repeated}"


def test_every_entry_has_the_four_columns() -> None:
    entries, _ = doc_parts()
    misshapen = [e.id for e in entries if e.cells != ENTRY_CELLS]
    assert not misshapen, (
        f"entries without exactly the columns id | what it proves | test(s) | note: {misshapen}"
    )


def test_every_id_in_a_test_name_has_an_entry() -> None:
    entries, _ = doc_parts()
    documented = {name_id(e.id) for e in entries}
    carrying = carriers()
    assert carrying, "no test name carries a checklist id: has the naming rule changed?"
    missing = {
        doc_id(checklist_id): sorted(f"{path}::{name}" for path, name in tests)
        for checklist_id, tests in sorted(carrying.items())
        if checklist_id not in documented
    }
    assert not missing, f"ids carried by test names but absent from {DOC.name}: {missing}"


def test_every_cited_test_is_defined_in_the_file_it_names() -> None:
    entries, _ = doc_parts()
    defined = defined_tests()
    absent = [
        f"{e.id}: {path}::{name}"
        for e in entries
        for path, name in e.citations + e.mentioned
        if name not in defined.get(path, set())
    ]
    assert not absent, f"cited tests that do not exist: {absent}"


def test_every_test_carrying_an_id_is_cited_in_its_entry() -> None:
    entries, _ = doc_parts()
    cited = {name_id(e.id): set(e.citations) for e in entries}
    uncited = [
        f"{doc_id(checklist_id)}: {path}::{name}"
        for checklist_id, tests in sorted(carriers().items())
        for path, name in sorted(tests - cited.get(checklist_id, set()))
    ]
    assert not uncited, f"tests carrying an id that its entry does not cite: {uncited}"


def test_every_entry_cites_a_test_or_is_listed_as_not_yet_proved() -> None:
    entries, unproved = doc_parts()
    proved = {e.id for e in entries if e.citations}
    without_a_test = {e.id for e in entries if not e.citations}
    assert without_a_test <= set(unproved), (
        f"entries citing no test and not listed under {NOT_YET!r}: "
        f"{sorted(without_a_test - set(unproved))}"
    )
    assert not proved & set(unproved), (
        f"listed as not yet proved but citing a test: {sorted(proved & set(unproved))}"
    )
    assert set(unproved) <= proved | without_a_test, (
        f"listed as not yet proved but without an entry: {sorted(set(unproved) - without_a_test)}"
    )
