"""Monitoring as code: Prometheus rules and a Grafana dashboard generated from the metrics
obskit exports and the service level objectives a service declares.

- :mod:`.catalogue`: the metric families obskit exports (names, labels, what counts as
  an error), PromQL text helpers and durations: the one model the rules and the
  dashboard are both built from;
- :mod:`.slo_spec`: the SLO file (its format, loading and checks) and the model it makes;
- :mod:`.rules`: recording rules, SLO burn-rate alerts, obskit's health alerts, written
  as a rule file or a prometheus-operator ``PrometheusRule``;
- :mod:`.dashboard`: the Grafana dashboard;
- :mod:`.yaml_text`: YAML written without a YAML library;
- :mod:`.command`: what ``obskit monitoring rules|dashboard`` runs.

Nothing here is imported by ``import obskit`` or ``init()``: only the command uses it.
"""
