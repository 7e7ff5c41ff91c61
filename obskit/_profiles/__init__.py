"""Profiles: a sampling profiler whose samples name the span they ran in, written as
pprof (a directory of ``.pb.gz`` files, Grafana Pyroscope's ingest API) and as flame
graphs (``obskit profile``)."""
