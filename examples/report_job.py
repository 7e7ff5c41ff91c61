"""A small batch job to try ``obskit profile`` on: it loads rows (waiting, as on a
database), parses them and renders a report (CPU). ``obskit profile -- examples/report_job.py``
writes its flame graph and pprof file."""

from __future__ import annotations

import json
import time


def load_rows(count: int) -> list[str]:
    """Rows as a database would return them: mostly waiting."""
    time.sleep(0.3)
    return [json.dumps({"id": n, "amount": n % 97, "tags": ["a", "b"]}) for n in range(count)]


def parse_rows(rows: list[str]) -> list[dict[str, object]]:
    return [json.loads(row) for row in rows]


def render_report(rows: list[dict[str, object]]) -> str:
    lines = []
    for row in rows:
        lines.append(f"{row['id']:>8} {row['amount']:>6}")
    return "\n".join(sorted(lines, key=lambda line: line[::-1]))


def main() -> None:
    for _ in range(3):
        rows = parse_rows(load_rows(60_000))
        report = render_report(rows)
    print(f"report: {len(report.splitlines())} lines")


if __name__ == "__main__":
    main()
