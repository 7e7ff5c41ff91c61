"""A process that runs @obskit.traced functions and serves /metrics on obskit's
dedicated metrics port, as configured by OBSKIT_METRICS_PORT and OBSKIT_METRICS_ADDR
(for the Prometheus test).

Usage: python traced_worker.py OTLP_ENDPOINT SECONDS
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
    endpoint, seconds = sys.argv[1], float(sys.argv[2])
    obskit.init(service_name="traced-worker", otlp_endpoint=endpoint)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        checkout(n)
        n += 1
        time.sleep(0.01)
    obskit.shutdown()


if __name__ == "__main__":
    main()
