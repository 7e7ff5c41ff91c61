"""A process that runs @obskit.traced functions and serves /metrics (for the Prometheus test).

Usage: python traced_worker.py METRICS_PORT OTLP_ENDPOINT SECONDS
"""

from __future__ import annotations

import sys
import time

import obskit


@obskit.traced
def checkout(n: int) -> int:
    time.sleep(0.002 + (n % 5) * 0.004)
    return n


def main() -> None:
    port, endpoint, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    obskit.init(
        service_name="traced-worker",
        metrics_port=port,
        metrics_addr="127.0.0.1",
        otlp_endpoint=endpoint,
    )
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        checkout(n)
        n += 1
        time.sleep(0.01)
    obskit.shutdown()


if __name__ == "__main__":
    main()
