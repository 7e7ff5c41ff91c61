"""The generated rules under promtool: every file passes `promtool check rules`, and
`promtool test rules` runs them on synthetic series (each burn-rate alert fires at its
burn rate and stays silent just below it; a latency SLO reads its threshold's bucket)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from obskit._monitoring import rules, slo_spec
from obskit._monitoring.slo_spec import DEFAULT_ALERTS, BurnRateAlert
from tests.prometheus_rules import promtool

#: Every label a route SLO's series and alerts carry (synthetic series come from job "api").
ROUTE = {"http_route": "/work/<int:n>", "http_request_method": "GET"}
SPEC: dict[str, Any] = {
    "slos": [
        {"name": "work", "route": "/work/<int:n>", "method": "GET", "availability": 99},
        {"name": "checkout", "route": "/checkout", "latency": {"threshold": 0.25, "objective": 99}},
        {"name": "whole", "latency": {"threshold": 1, "objective": 95}},
        {"name": "charge", "function": "shop.billing.charge", "availability": 99},
        {"name": "mail", "task": "shop.tasks.send_mail", "availability": 99},
    ]
}

#: The route SLO alone (promtool evaluates every rule at every step: fewer is faster).
WORK: dict[str, Any] = {"slos": SPEC["slos"][:1]}


def _model(spec: dict[str, Any], alerts: tuple[BurnRateAlert, ...] | None = None) -> Any:
    model = slo_spec.build(spec, "test", {})
    if alerts is not None:
        model = slo_spec.Model(**{**model.__dict__, "alerts": alerts})
    return model


def _without_annotations(text: str) -> str:
    """The rule file with the alerts' annotations left out (promtool compares them)."""
    content = yaml.safe_load(text)
    for group in content["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return json.dumps(content)


def _run(tmp_path: Path, rule_text: str, tests: list[dict[str, Any]], interval: str = "1m") -> None:
    (tmp_path / "rules.yaml").write_text(rule_text)
    (tmp_path / "tests.yaml").write_text(
        json.dumps({"rule_files": ["rules.yaml"], "evaluation_interval": interval, "tests": tests})
    )
    result = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def _requests(labels: str, values: str) -> dict[str, str]:
    return {
        "series": f"http_server_request_duration_seconds_count{{{labels}}}",
        "values": values,
    }


def _burn_series(burn_rate: float, budget: float, steps: int) -> list[dict[str, str]]:
    """1000 good requests a step for ``steps``, and failures at ``burn_rate`` times the
    budget's pace all along."""
    ratio = burn_rate * budget
    failures = 1000 * ratio / (1 - ratio)
    route = 'job="api", http_route="/work/<int:n>", http_request_method="GET"'
    return [
        _requests(f'{route}, http_response_status_code="200"', f"0+1000x{steps}"),
        _requests(f'{route}, http_response_status_code="500"', f"0+{failures!r}x{steps}"),
    ]


def _alert_labels(row: BurnRateAlert) -> dict[str, str]:
    return {
        "job": "api",
        "severity": row.severity,
        "long_window": rules.catalogue.duration(row.long_window),
        "short_window": rules.catalogue.duration(row.short_window),
        "slo": "work-availability",
        "slo_kind": "availability",
        **ROUTE,
    }


@pytest.mark.parametrize(
    ("spec", "scale"),
    [
        (SPEC, 1.0),
        (SPEC, 1 / 60),
        ({**SPEC, "group_by": [], "selector": 'job=~"shop|cart"'}, 1.0),
        (None, 1.0),
    ],
    ids=["slos", "scaled", "one-series", "no-slos"],
)
@pytest.mark.parametrize("kind", ["rules", "prometheusrule"])
def test_promtool_check_rules_passes_on_every_generated_file(
    tmp_path: Path, spec: dict[str, Any] | None, scale: float, kind: str
) -> None:
    """`promtool check rules` accepts the rule file and the PrometheusRule's groups (with and
    without SLOs, at full and test-scaled windows, summed by no label and by the default
    ones) and lints no duplicate rule."""
    model = slo_spec.build(spec, "test", {}, window_scale=scale)
    if kind == "rules":
        text = rules.rule_file(model)
    else:
        manifest = yaml.safe_load(rules.prometheus_rule(model, "shop", "monitoring"))
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        assert manifest["kind"] == "PrometheusRule"
        assert manifest["metadata"] == {"name": "shop", "namespace": "monitoring"}
        text = json.dumps(manifest["spec"])
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("row", DEFAULT_ALERTS, ids=lambda row: f"{row.burn_rate:g}x")
def test_each_burn_rate_alert_fires_at_its_rate_and_stays_silent_just_below(
    tmp_path: Path, row: BurnRateAlert
) -> None:
    """With failures at 1.02 times a row's burn rate over its long window, that row's alert
    fires; at 0.98 times, it stays silent (the row alone in the table)."""
    model = _model(WORK, alerts=(row,))
    # A sample every 60th of the long window (each short window holds five or more), 70
    # samples: the evaluation is over long windows full of the burn.
    step = f"{int(row.long_window // 60)}s"
    tests = [
        {
            "interval": step,
            "input_series": _burn_series(row.burn_rate * factor, 0.01, 70),
            "alert_rule_test": [
                {
                    "eval_time": f"{int(row.long_window // 60) * 70}s",
                    "alertname": rules.BURN_RATE_ALERT,
                    "exp_alerts": [{"exp_labels": _alert_labels(row)}] if fires else [],
                }
            ],
        }
        for factor, fires in ((1.02, True), (0.98, False))
    ]
    _run(tmp_path, _without_annotations(rules.rule_file(model)), tests, interval=step)


@pytest.mark.slow
def test_a_fast_burn_pages_once_with_annotations_naming_the_route_and_the_dashboard(
    tmp_path: Path,
) -> None:
    """After a quiet day, 15x the budget's pace for 70 minutes fires only the 14.4x page
    row of the default table (the longer windows see a lower pace); its summary names the
    route, its description the objective and the error ratio, its links the dashboard and
    the runbook."""
    model = slo_spec.build({**WORK, "grafana_url": "https://grafana.example.com/"}, "test", {})
    # A sample every 2 minutes: 720 quiet ones, then 35 with failures.
    quiet, burn = 720, 35
    route = 'job="api", http_route="/work/<int:n>", http_request_method="GET"'
    failures = 1000 * 0.15 / 0.85
    row = DEFAULT_ALERTS[0]
    tests = [
        {
            "interval": "2m",
            "input_series": [
                _requests(f'{route}, http_response_status_code="200"', f"0+1000x{quiet + burn}"),
                _requests(
                    f'{route}, http_response_status_code="500"',
                    f"0x{quiet} {failures!r}+{failures!r}x{burn - 1}",
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": f"{2 * (quiet + burn)}m",
                    "alertname": rules.BURN_RATE_ALERT,
                    "exp_alerts": [
                        {
                            "exp_labels": _alert_labels(row),
                            "exp_annotations": {
                                "summary": "api: route GET /work/<int:n> burns its availability"
                                " error budget 14.4x too fast",
                                "description": "SLO work-availability: 99% of the requests"
                                " of route GET /work/<int:n> must succeed over 30d. 15% were"
                                " answered with a 5xx status over the last 1h (and over 5m):"
                                " 14.4 times the budget's"
                                " pace, which spends 2% of it in 1h and all of it in 2.08"
                                " days.",
                                "dashboard": "https://grafana.example.com/d/obskit"
                                "?var-slo=work-availability",
                                "runbook_url": "https://obskit.readthedocs.io/en/latest/"
                                "monitoring/#obskitsloburnrate",
                            },
                        }
                    ],
                }
            ],
        }
    ]
    _run(tmp_path, rules.rule_file(model), tests, interval="2m")


def _bucket(labels: str, le: str, per_minute: float) -> dict[str, str]:
    return {
        "series": f'http_server_request_duration_seconds_bucket{{{labels}, le="{le}"}}',
        "values": f"0+{per_minute!r}x60",
    }


def _ratio_test(series: list[dict[str, str]], slo: str, expected: float) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [
            {
                "expr": f'obskit:slo_error_ratio:rate5m{{slo="{slo}"}}',
                "eval_time": "30m",
                "exp_samples": [{"labels": "", "value": expected}],
            }
        ],
    }


@pytest.mark.slow
def test_a_latency_slo_counts_the_bucket_of_its_threshold(tmp_path: Path) -> None:
    """A 0.25 s objective's error ratio is the share above the le="0.25" bucket (not the
    0.1 s or 0.5 s one), and a 1 s objective reads the bucket whether Prometheus stored
    its bound as "1.0" (prometheus-client's spelling) or "1" (Prometheus 3's)."""
    # 16 requests a second (rates and their ratios are exact in binary).
    checkout = 'job="api", http_route="/checkout", http_request_method="GET"'
    series = [
        _bucket(checkout, "0.1", 480),
        _bucket(checkout, "0.25", 720),
        _bucket(checkout, "0.5", 960),
        _bucket(checkout, "+Inf", 960),
        _requests(f'{checkout}, http_response_status_code="200"', "0+960x60"),
    ]
    tests = [_ratio_test(series, "checkout-latency", 0.25)]
    for spelling in ("1.0", "1"):
        whole = 'job="api", http_route="/any", http_request_method="GET"'
        tests.append(
            _ratio_test(
                [
                    _bucket(whole, "0.5", 240),
                    _bucket(whole, spelling, 720),
                    _bucket(whole, "+Inf", 960),
                    _requests(f'{whole}, http_response_status_code="200"', "0+960x60"),
                ],
                "whole-latency",
                0.25,
            )
        )
    for test in tests:
        for case in test["promql_expr_test"]:
            case["exp_samples"][0]["labels"] = _sli_labels(case["expr"], model_spec=SPEC)
    _run(tmp_path, rules.rule_file(_model(SPEC)), tests)


def _sli_labels(expr: str, model_spec: dict[str, Any]) -> str:
    """The labels of an SLI series: the recording rule's name, ``job`` and the SLO's."""
    name = expr.split("{")[0]
    slo_name = expr.split('"')[1]
    (slo,) = [slo for slo in _model(model_spec).slos if slo.name == slo_name]
    labels = {"__name__": name, "job": "api", **slo.labels}
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


def test_function_and_task_slos_count_their_failed_outcomes(tmp_path: Path) -> None:
    """A function SLO's failures are its `error` outcomes (not `cancelled`); a task SLO's
    are `error` and `time_limit` (not `retry`)."""

    def series(metric: str, label: str, outcomes: dict[str, int]) -> list[dict[str, str]]:
        return [
            {
                "series": f'{metric}_count{{job="api", {label}, outcome="{outcome}"}}',
                "values": f"0+{count}x60",
            }
            for outcome, count in outcomes.items()
        ]

    function = series(
        "obskit_function_duration_seconds",
        'function="shop.billing.charge"',
        {"ok": 720, "error": 120, "cancelled": 120},
    )
    task = series(
        "obskit_task_duration_seconds",
        'task="shop.tasks.send_mail"',
        {"ok": 480, "error": 120, "time_limit": 120, "retry": 240},
    )
    tests = [
        _ratio_test(function, "charge-availability", 0.125),
        _ratio_test(task, "mail-availability", 0.25),
    ]
    for test in tests:
        for case in test["promql_expr_test"]:
            case["exp_samples"][0]["labels"] = _sli_labels(case["expr"], model_spec=SPEC)
    _run(tmp_path, rules.rule_file(_model(SPEC)), tests)


def test_red_rules_sum_pods_and_give_a_zero_error_ratio_without_errors(tmp_path: Path) -> None:
    """The route request rate is summed over pods (no `instance` label left), and a route
    that never failed has an error ratio of 0, not no value."""
    route = (
        'job="api", http_route="/ok", http_request_method="GET", http_response_status_code="200"'
    )
    tests = [
        {
            "interval": "1m",
            "input_series": [
                _requests(f'{route}, instance="pod-a"', "0+600x30"),
                _requests(f'{route}, instance="pod-b"', "0+600x30"),
            ],
            "promql_expr_test": [
                {
                    "expr": "obskit:http_server_requests:rate5m",
                    "eval_time": "20m",
                    "exp_samples": [
                        {
                            "labels": 'obskit:http_server_requests:rate5m{job="api",'
                            ' http_route="/ok", http_request_method="GET"}',
                            "value": 20,
                        }
                    ],
                },
                {
                    "expr": "obskit:http_server_error_ratio:rate5m",
                    "eval_time": "20m",
                    "exp_samples": [
                        {
                            "labels": 'obskit:http_server_error_ratio:rate5m{job="api",'
                            ' http_route="/ok", http_request_method="GET"}',
                            "value": 0,
                        }
                    ],
                },
            ],
        }
    ]
    _run(tmp_path, rules.rule_file(_model({})), tests)


@pytest.mark.slow
def test_each_health_alert_fires_on_what_it_watches_and_not_on_the_rest(tmp_path: Path) -> None:
    """Each obskit health alert fires for the counter or gauge it watches (spans and log
    lines lost, exports failing, series over the cap, stuck spans, an accelerator off, a
    broken multiprocess directory, internal errors); drops at shutdown, rate-limited
    repeats, a job whose exports partly succeed and accelerators all switched off do not."""

    def counter(name: str, labels: str, per_minute: int = 5) -> dict[str, str]:
        return {"series": f"{name}{{{labels}}}", "values": f"0+{per_minute}x120"}

    def gauge(name: str, labels: str, value: int) -> dict[str, str]:
        return {"series": f"{name}{{{labels}}}", "values": f"{value}x120"}

    series = [
        counter("obskit_dropped_total", 'job="api", signal="traces", reason="queue_full"'),
        counter("obskit_dropped_total", 'job="api", signal="traces", reason="shutdown"'),
        counter("obskit_dropped_total", 'job="api", signal="logs", reason="pipe_full"'),
        counter("obskit_dropped_total", 'job="api", signal="logs", reason="rate_limited"'),
        counter("obskit_dropped_total", 'job="api", signal="metrics", reason="dir_full"'),
        counter("obskit_export_errors_total", 'job="api", signal="traces", reason="timeout"'),
        counter("obskit_export_errors_total", 'job="ok", signal="traces", reason="timeout"'),
        counter("obskit_spans_exported_total", 'job="ok"', 100),
        counter("obskit_metric_overflow_total", 'job="api", metric="orders"'),
        counter("obskit_stuck_spans_total", 'job="api"', 1),
        gauge("obskit_fast_path_enabled", 'job="api", path="spans"', 0),
        gauge("obskit_fast_path_enabled", 'job="api", path="histogram"', 1),
        gauge("obskit_fast_path_enabled", 'job="off", path="spans"', 0),
        gauge("obskit_multiprocess_ok", 'job="api", instance="pod-a:9464"', 0),
        gauge("obskit_multiprocess_ok", 'job="api", instance="pod-b:9464"', 1),
        counter("obskit_internal_errors_total", 'job="api", component="span"'),
    ]
    expected = {
        "ObskitSpansDropped": [{"reason": "queue_full"}],
        "ObskitLogLinesDropped": [{"reason": "pipe_full"}],
        "ObskitMetricsDropped": [{"signal": "metrics", "reason": "dir_full"}],
        "ObskitSpanExportFailing": [{}],
        "ObskitMetricSeriesOverflow": [{"metric": "orders"}],
        "ObskitStuckSpans": [{}],
        "ObskitFastPathOff": [{"path": "spans"}],
        "ObskitMultiprocessDegraded": [{"instance": "pod-a:9464"}],
        "ObskitInternalErrors": [{"component": "span"}],
    }
    severities = {health.name: health.severity for health in rules.HEALTH}
    assert set(expected) == set(severities)
    alert_tests = [
        {
            "eval_time": "100m",
            "alertname": name,
            "exp_alerts": [
                {"exp_labels": {"job": "api", "severity": severities[name], **labels}}
                for labels in found
            ],
        }
        for name, found in expected.items()
    ]
    tests = [{"interval": "1m", "input_series": series, "alert_rule_test": alert_tests}]
    _run(tmp_path, _without_annotations(rules.rule_file(_model({}))), tests)
