"""The SLO file and what `obskit monitoring rules|dashboard` make of it: checks with
ConfigError, the YAML writer, the command line, and the documentation generated from it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from obskit import ConfigError, cli
from obskit._monitoring import catalogue, dashboard, rules, slo_spec, yaml_text

DOCS = Path(__file__).resolve().parents[1] / "docs"
ROUTE_SLO = {"route": "/cart/<int:id>", "latency": {"threshold": 0.3, "objective": 99}}


def _build(raw: Any, environ: dict[str, str] | None = None) -> slo_spec.Model:
    return slo_spec.build(raw, "file slo.yaml", environ or {})


def test_a_latency_threshold_off_the_buckets_names_the_key_value_source_and_bounds() -> None:
    """A threshold that is not a bucket bound is a ConfigError naming the SLO key, the
    value, the file, every bound that exists and where the bounds came from."""
    with pytest.raises(ConfigError) as caught:
        _build({"slos": [ROUTE_SLO]})
    error = caught.value
    assert error.setting == "slos[0].latency.threshold"
    assert error.value == 0.3
    assert error.source == "file slo.yaml"
    assert "0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10" in (
        error.allowed
    )
    assert "histogram_buckets, from default" in error.allowed


def test_thresholds_are_checked_against_the_buckets_the_app_uses() -> None:
    """The bounds come from the file's histogram_buckets, else OBSKIT_HISTOGRAM_BUCKETS,
    else obskit's default; a threshold may be written as a duration."""
    environ = {"OBSKIT_HISTOGRAM_BUCKETS": "0.1,0.3,1"}
    (slo,) = _build({"slos": [ROUTE_SLO]}, environ).slos
    assert slo.threshold == 0.3
    with pytest.raises(ConfigError, match=r"0\.2, 0\.4 \(histogram_buckets, from file"):
        _build({"histogram_buckets": [0.2, 0.4], "slos": [ROUTE_SLO]}, environ)
    spec = {"slos": [{"task": "t", "latency": {"threshold": "250ms", "objective": "99.5%"}}]}
    (slo,) = _build(spec).slos
    assert (slo.threshold, slo.objective, slo.target) == (0.25, 0.995, "task")
    with pytest.raises(ConfigError) as caught:
        _build({"slos": [ROUTE_SLO]}, {"OBSKIT_HISTOGRAM_BUCKETS": "1,0.5"})
    assert (caught.value.setting, caught.value.source) == (
        "histogram_buckets",
        "env OBSKIT_HISTOGRAM_BUCKETS",
    )


@pytest.mark.parametrize(
    ("raw", "setting"),
    [
        ([], "slo_file"),
        ({"slo": []}, "slo"),
        ({"slos": [{"route": "/a", "task": "b", "availability": 99}]}, "slos[0]"),
        ({"slos": [{"route": "/a"}]}, "slos[0]"),
        ({"slos": [{"route": "/a", "availability": 100}]}, "slos[0].availability"),
        ({"slos": [{"route": "/a", "availability": "high"}]}, "slos[0].availability"),
        ({"slos": [{"function": "f", "method": "GET", "availability": 99}]}, "slos[0].method"),
        ({"slos": [{"route": "", "availability": 99}]}, "slos[0].route"),
        ({"slos": [{"name": "Bad Name", "availability": 99}]}, "slos[0].name"),
        ({"slos": [{"availability": 99}, {"availability": 99.9}]}, "slos"),
        ({"slos": [{"route": "/a", "latency": 0.25}]}, "slos[0].latency"),
        ({"slos": [{"route": "/a", "latency": {"threshold": 0.25}}]}, "slos[0].latency.objective"),
        ({"period": "a month"}, "period"),
        ({"period": "2h"}, "period"),
        ({"selector": "{job='x'}"}, "selector"),
        ({"selector": {"job": 3}}, "selector.job"),
        ({"group_by": "job"}, "group_by"),
        ({"burn_rate_alerts": []}, "burn_rate_alerts"),
        (
            {"burn_rate_alerts": [{"severity": "page", "burn_rate": 2}]},
            "burn_rate_alerts[0].long_window",
        ),
        (
            {
                "burn_rate_alerts": [
                    {"severity": "p", "burn_rate": 2, "long_window": "5m", "short_window": "1h"}
                ]
            },
            "burn_rate_alerts[0].short_window",
        ),
        ({"profiles": "yes"}, "profiles"),
    ],
)
def test_each_mistake_in_the_slo_file_names_its_key(raw: Any, setting: str) -> None:
    """A wrong key, type or value is one ConfigError naming where in the file it is."""
    with pytest.raises(ConfigError) as caught:
        _build(raw)
    assert caught.value.setting == setting
    assert caught.value.source == "file slo.yaml"


def test_an_objective_that_no_alert_of_the_table_could_see_is_refused() -> None:
    """90 % leaves a 10 % budget: a 14.4x burn would be more failures than requests, so the
    default table refuses it; a table without that row accepts it."""
    with pytest.raises(ConfigError, match="could never be seen"):
        _build({"slos": [{"availability": 90}]})
    table = [{"severity": "ticket", "burn_rate": 3, "long_window": "1d", "short_window": "2h"}]
    (slo,) = _build({"burn_rate_alerts": table, "slos": [{"availability": 90}]}).slos
    assert slo.objective == 0.9


def test_the_model_names_slos_and_labels_their_series() -> None:
    """Each objective makes an SLO named after the service, its target and its kind, whose
    series carry its route (and method), function or task."""
    model = _build(
        {
            "service": "Shop",
            "slos": [
                {"route": "/cart/<int:id>", "method": "post", "availability": 99.9},
                {"name": "pay", "function": "shop.pay", "availability": 99},
                {"availability": 99},
            ],
        }
    )
    assert [slo.name for slo in model.slos] == [
        "shop-cart-int-id-post-availability",
        "pay-availability",
        "shop-service-availability",
    ]
    assert model.slos[0].labels == {
        "slo": "shop-cart-int-id-post-availability",
        "slo_kind": "availability",
        "http_route": "/cart/<int:id>",
        "http_request_method": "POST",
    }
    assert model.slos[1].labels["function"] == "shop.pay"
    assert model.slos[2].matchers == ()
    assert model.dashboard_uid == "obskit-shop"


def test_a_json_file_and_a_yaml_file_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SLO file may be JSON (no extra needed) or YAML (PyYAML); without PyYAML, a YAML
    file is refused with the extra to install."""
    raw = {"service": "shop", "slos": [{"route": "/a", "availability": 99.9}]}
    (tmp_path / "slo.json").write_text(json.dumps(raw))
    (tmp_path / "slo.yaml").write_text(yaml.safe_dump(raw))
    assert slo_spec.read(tmp_path / "slo.json") == slo_spec.read(tmp_path / "slo.yaml") == raw
    (tmp_path / "bad.yaml").write_text("slos: [")
    with pytest.raises(ConfigError, match="valid YAML"):
        slo_spec.read(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="a readable file"):
        slo_spec.read(tmp_path / "missing.yaml")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ConfigError, match=r"pip install 'obskit-sdk\[monitoring\]'"):
        slo_spec.read(tmp_path / "slo.yaml")
    assert slo_spec.read(tmp_path / "slo.json") == raw


def test_windows_scale_and_keep_their_names() -> None:
    """--window-scale shrinks every window, `for` and the period while the recording rule
    names keep the nominal windows the alerts and the dashboard read."""
    model = slo_spec.build({"slos": [{"availability": 99}]}, "t", {}, window_scale=1 / 60)
    text = rules.rule_file(model)
    assert "record: obskit:slo_error_ratio:rate1h" in text
    assert "[1m]" in text  # 1h
    assert "[5s]" in text  # 5m
    assert "[12h]" in text  # the 30-day period
    assert "[1h]" not in text
    assert 'for: "15s"' in text  # the health alerts' 15 minutes
    with pytest.raises(ConfigError):
        slo_spec.build(None, "t", {}, window_scale=2)


@pytest.mark.parametrize(
    ("bound", "matcher"),
    [
        (0.25, 'le="0.25"'),
        (1.0, 'le=~"1|1[.]0"'),
        (10.0, 'le=~"10|10[.]0"'),
        (0.005, 'le="0.005"'),
    ],
)
def test_a_bucket_bound_is_matched_as_prometheus_client_and_prometheus_3_spell_it(
    bound: float, matcher: str
) -> None:
    """A bound is matched in prometheus-client's spelling ("1.0") and Prometheus 3's ("1")."""
    assert catalogue.le_matcher(bound) == matcher


@pytest.mark.parametrize(
    ("seconds", "text"), [(300, "5m"), (5400, "1h30m"), (86400 * 3, "3d"), (2.5, "2500ms")]
)
def test_durations_are_written_and_read_as_prometheus_does(seconds: float, text: str) -> None:
    """A duration is written in whole units, largest first, and read back."""
    assert catalogue.duration(seconds) == text
    assert catalogue.parse_duration(text) == seconds


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)


@given(_VALUES)
def test_the_yaml_writer_reads_back_as_written(value: Any) -> None:
    """Whatever mappings, lists, text, numbers and booleans the writer gets, PyYAML reads
    back exactly them."""
    assert yaml.safe_load(yaml_text.dump({"value": value})) == {"value": value}


def test_the_rule_file_reads_back_as_the_rule_groups() -> None:
    """The rule file and the PrometheusRule's spec are the rule groups, as YAML."""
    model = _build({"slos": [{"route": "/a", "availability": 99}]})
    assert yaml.safe_load(rules.rule_file(model)) == {"groups": rules.groups(model)}
    manifest = yaml.safe_load(rules.prometheus_rule(model, labels={"release": "kps"}))
    assert manifest["metadata"] == {"name": "obskit", "labels": {"release": "kps"}}
    assert manifest["spec"] == {"groups": rules.groups(model)}


def test_the_command_writes_rules_manifests_and_the_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`obskit monitoring rules|dashboard` write to -o or stdout; a mistake in the SLO file
    exits with code 2 and the ConfigError's message."""
    spec = tmp_path / "slo.json"
    spec.write_text(json.dumps({"service": "shop", "slos": [{"availability": 99.9}]}))
    assert cli.main(["monitoring", "rules", "--slo", str(spec), "-o", str(tmp_path / "r")]) == 0
    assert "alert: ObskitSLOBurnRate" in (tmp_path / "r").read_text()
    argv = ["monitoring", "rules", "--slo", str(spec), "--format", "prometheusrule"]
    assert cli.main([*argv, "--namespace", "mon", "--label", "release=kps"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["metadata"] == {
        "name": "obskit-shop",
        "namespace": "mon",
        "labels": {"release": "kps"},
    }
    assert cli.main(["monitoring", "dashboard", "--slo", str(spec)]) == 0
    assert json.loads(capsys.readouterr().out)["uid"] == "obskit-shop"
    assert cli.main([*argv, "--label", "release"]) == 2
    assert "--label expects NAME=VALUE" in capsys.readouterr().err
    spec.write_text(json.dumps({"slos": [ROUTE_SLO]}))
    assert cli.main(["monitoring", "dashboard", "--slo", str(spec)]) == 2
    assert "slos[0].latency.threshold=0.3" in capsys.readouterr().err


def test_the_docs_dashboard_is_the_generators_output() -> None:
    """docs/grafana-dashboard.json equals what `obskit monitoring dashboard` writes without
    an SLO file (regenerate if not)."""
    page = (DOCS / "grafana-dashboard.json").read_text(encoding="utf-8")
    expected = dashboard.render(slo_spec.build(None, "none", {}))
    assert page == expected, "run: obskit monitoring dashboard -o docs/grafana-dashboard.json"


def test_the_dashboard_links_exemplars_to_traces_logs_and_profiles() -> None:
    """Every exemplar panel links the trace (Tempo), the trace's log lines (Loki, by
    trace_id) and the span's profile (Pyroscope), the last only while profiles are on."""
    board = dashboard.dashboard(slo_spec.build(None, "none", {}))
    exemplar_panels = [
        panel
        for panel in board["panels"]
        if any(t.get("exemplar") for t in panel.get("targets", ()))
    ]
    assert len(exemplar_panels) == 7
    for panel in exemplar_panels:
        links = {link["title"]: link["url"] for link in panel["fieldConfig"]["defaults"]["links"]}
        assert list(links) == ["Trace", "Logs of this trace", "Profile of this span"]
        assert "${__data.fields.trace_id}" in links["Trace"]
        assert "trace_id%3D%5C%22${__data.fields.trace_id}" in links["Logs of this trace"]
        assert "${__data.fields.span_id}" in links["Profile of this span"]
    off = dashboard.dashboard(slo_spec.build({"profiles": False}, "none", {}))
    names = [variable["name"] for variable in off["templating"]["list"]]
    assert "pyroscope" not in names
    assert "Profile of this span" not in json.dumps(off)


def test_the_monitoring_page_documents_every_alert_and_its_example_builds() -> None:
    """docs/monitoring.md has a section (the alerts' runbook link) for each alert, and the
    SLO file it shows builds."""
    page = (DOCS / "monitoring.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (\w+)$", page, re.M))
    assert {rules.BURN_RATE_ALERT, *(health.name for health in rules.HEALTH)} <= headings
    example = re.search(r"```yaml\n(# slo\.yaml\n.*?)```", page, re.S)
    assert example is not None
    model = _build(yaml.safe_load(example.group(1)))
    assert len(model.slos) == 5


def test_the_grafana_page_names_every_panel_of_the_generated_dashboard() -> None:
    """docs/grafana.md has a line for every panel and section of the dashboard."""
    page = (DOCS / "grafana.md").read_text(encoding="utf-8")
    for panel in dashboard.dashboard(slo_spec.build(None, "none", {}))["panels"]:
        assert f"| {panel['title']} |" in page, panel["title"]
