"""The per-worker exemplar store keeps HTTP request exemplars, updated in place."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.servers import run_python

ROOT = Path(__file__).resolve().parents[1]

# Multiprocess mode must be on before prometheus-client is imported: a fresh process.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import obskit
    from flask import Flask
    from obskit._metrics.multiprocess import read_exemplars

    obskit.init(service_name="mp", traces_exporter="none", log_stdlib=False)
    app = Flask("mp")

    @app.get("/orders/<int:order_id>/items/<int:item_id>")
    def item(order_id, item_id):
        return "ok"

    obskit.instrument_flask(app)
    client = app.test_client()
    sys.stdout = open(os.devnull, "w")  # the access lines
    sent = [f"{n:032x}" for n in range(1, 21)]
    for trace_id in sent:
        parent = f"00-{trace_id}-{1:016x}-01"
        client.get("/orders/1/items/2", headers={"traceparent": parent})
    sys.stdout = sys.__stdout__
    path = os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"exemplars_{os.getpid()}.obskit")
    found = {
        name + json.dumps(labels): exemplar.labels["trace_id"]
        for (name, labels), exemplar in read_exemplars(path).items()
    }
    print(json.dumps({"sent": sent, "found": found}))
    """
)


def test_http_exemplars_are_recorded_and_overwritten_in_multiprocess_mode(tmp_path: Path) -> None:
    """Requests on a long route template leave one exemplar per bucket, the newest one."""
    result = run_python(
        SCRIPT, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    sent, found = data["sent"], data["found"]
    http = {key: value for key, value in found.items() if "request_duration" in key}
    assert http, found
    assert all('"/orders/<int:order_id>/items/<int:item_id>"' in key for key in http)
    # Each bucket holds an exemplar of a request made; the last request's is kept.
    assert set(http.values()) <= set(sent)
    assert sent[-1] in http.values()
    assert len(http) < len(sent)  # records were overwritten, not appended
