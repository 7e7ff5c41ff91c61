"""pytest plugin for `.ci/matrix`: run the contract subset named in `.ci/contract.txt`.

Loaded with ``-p contract_subset`` (``.ci`` on ``PYTHONPATH``). It keeps every test not
marked ``slow`` and the slow tests the file lists, and deselects the rest. A listed id
that matches no test of a collected file fails the run: a renamed test cannot silently
drop out of the subset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LIST = Path(__file__).with_name("contract.txt")


def listed() -> list[str]:
    """The node ids in `.ci/contract.txt`, without comments."""
    lines = (line.split("#", 1)[0].strip() for line in LIST.read_text().splitlines())
    return [line for line in lines if line]


def _matches(nodeid: str, entry: str) -> bool:
    return nodeid == entry or nodeid.startswith((entry + "::", entry + "["))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    entries = listed()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        if not slow or any(_matches(item.nodeid, entry) for entry in entries):
            keep.append(item)
        else:
            dropped.append(item)
    files = {item.nodeid.split("::", 1)[0] for item in items}
    stale = [
        entry
        for entry in entries
        if entry.split("::", 1)[0] in files and not any(_matches(i.nodeid, entry) for i in items)
    ]
    if stale:
        raise pytest.UsageError(f"{LIST}: no such test: {', '.join(stale)}")
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    return f"contract subset: tests not marked slow, and {len(listed())} entries of {LIST}"
