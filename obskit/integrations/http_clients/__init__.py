"""Outgoing HTTP calls: CLIENT spans, propagation and latency for each HTTP client library."""
