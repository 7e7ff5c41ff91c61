"""The support window pyproject.toml declares is the one CI tests: every ``>=`` floor is
pinned in ``.ci/floors.txt`` (which the floors job installs), the floors job runs on the
lowest declared Python and the newest job on the newest one, and the contract subset
the matrix jobs run names only tests that exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ROOT / ".ci" / "floors.txt"
#: Extras whose floors are tested; ``bench`` holds the peers the benchmarks compare
#: against, installed in a virtualenv of their own.
TESTED_EXTRAS = ("otlp", "flask", "django", "monitoring", "profiles", "dev")
#: Development tools the matrix jobs do not run (CI's main job runs them, newest).
NOT_IN_MATRIX = frozenset({"ruff", "mypy", "mkdocs", "mkdocs-material", "mkdocstrings"})


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _declared() -> dict[str, Requirement]:
    """The runtime dependencies and the tested extras' requirements that the matrix
    tests, by name."""
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    lines = list(project["dependencies"])  # type: ignore[call-overload]
    for extra in TESTED_EXTRAS:
        lines += extras[extra]
    declared: dict[str, Requirement] = {}
    for line in lines:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name != canonicalize_name(str(project["name"])) and name not in NOT_IN_MATRIX:
            declared[name] = requirement
    return declared


def _declared_floors() -> dict[str, Version]:
    """Each ``>=`` floor of the runtime dependencies and the tested extras, by name."""
    floors: dict[str, Version] = {}
    for name, requirement in _declared().items():
        (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
        floors[name] = Version(floor)
    return floors


def _pins() -> dict[str, tuple[Version, str]]:
    """Each ``name==version`` of floors.txt: (version, the comment right above it)."""
    pins: dict[str, tuple[Version, str]] = {}
    comment = ""
    for line in FLOORS.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            comment += text + "\n"
            continue
        if not text:
            comment = ""
            continue
        requirement = Requirement(text)
        (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
        pins[canonicalize_name(requirement.name)] = (Version(version), comment)
        comment = ""
    return pins


def test_every_declared_floor_is_pinned_at_that_floor() -> None:
    """Each ``>=`` floor in pyproject.toml (runtime, otlp/flask/django extras, the dev tools
    the tests run) has a pin in .ci/floors.txt at that floor, or at the first release of
    the floor's series (``>=2.3`` is ``2.3.x``): raising one without the other fails."""
    pins = _pins()
    wrong = {}
    for name, floor in _declared_floors().items():
        pinned = pins.get(name, (None, ""))[0]
        if (
            pinned is None
            or pinned < floor
            or pinned.release[: len(floor.release)] != floor.release
        ):
            wrong[name] = (str(floor), str(pinned))
    assert wrong == {}, "floor in pyproject.toml, pin in .ci/floors.txt"


def test_every_floor_is_installed_with_the_extras_pyproject_declares() -> None:
    """A floor declared with extras (``celery[redis]``) is pinned with the same extras,
    so the floors job installs what the tests of that range need (the redis client)."""
    pinned = {}
    for line in FLOORS.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            pinned[canonicalize_name(requirement.name)] = requirement.extras
    wrong = {
        name: (sorted(requirement.extras), sorted(pinned.get(name, ())))
        for name, requirement in _declared().items()
        if requirement.extras != pinned.get(name, set())
    }
    assert wrong == {}, "extras in pyproject.toml, extras in .ci/floors.txt"


def test_every_pin_is_a_declared_floor_or_says_which_floor_needs_it() -> None:
    """floors.txt pins nothing pyproject.toml does not declare, except a floor's own
    dependency, whose comment says ``via`` which floor needs it and why."""
    floors = _declared_floors()
    extra = {
        name: comment
        for name, (_, comment) in _pins().items()
        if name not in floors and not re.search(r"^# via \S+==", comment, re.MULTILINE)
    }
    assert extra == {}


def test_the_floors_job_runs_the_lowest_declared_python() -> None:
    """floors.txt's ``python:`` line (read by .ci/matrix) is requires-python's floor."""
    declared = Requirement(f"python{_project()['requires-python']}").specifier
    (floor,) = [s.version for s in declared if s.operator == ">="]
    assert re.search(rf"^# python: {re.escape(floor)}$", FLOORS.read_text(), re.MULTILINE)


def test_the_newest_job_runs_the_newest_declared_python() -> None:
    """.ci/matrix's NEWEST_PYTHON is the newest Python the classifiers declare."""
    classifiers = _project()["classifiers"]
    assert isinstance(classifiers, list)
    declared = [
        Version(c.rsplit(" :: ", 1)[1])
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    matrix = (ROOT / ".ci" / "matrix").read_text()
    (newest,) = re.findall(r"^NEWEST_PYTHON=(\S+)$", matrix, re.MULTILINE)
    assert Version(newest) == max(declared)


def test_the_contract_subset_names_existing_slow_tests() -> None:
    """Every entry of .ci/contract.txt is a file of tests/ and a test defined in it, and
    marked slow (the subset has every other test already)."""
    contract = ROOT / ".ci" / "contract.txt"
    entries = [line.split("#", 1)[0].strip() for line in contract.read_text().splitlines()]
    missing = []
    for entry in filter(None, entries):
        path, _, test = entry.partition("::")
        source = ROOT / path
        if not source.is_file():
            missing.append(entry)
            continue
        if test and not re.search(
            rf"@pytest\.mark\.slow\n(?:@.*\n)*def {re.escape(test)}\(",
            source.read_text(),
        ):
            missing.append(entry)
    assert missing == []


@pytest.mark.parametrize("wheel", ["flask", "werkzeug"])
def test_the_flask_next_job_has_its_development_wheels(wheel: str) -> None:
    """The flask-next job installs the development wheels kept in .ci/wheels/ (CI runs on
    a fresh clone, without the team's shared folder)."""
    assert list((ROOT / ".ci" / "wheels").glob(f"{wheel}-*.dev*-py3-none-any.whl"))
