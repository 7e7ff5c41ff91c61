"""Traces: the tracer pipeline, resource, exporters, @traced/span(), ids, the console tree."""
