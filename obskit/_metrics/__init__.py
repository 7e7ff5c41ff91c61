"""Metrics: obskit's registry and guard, exposition, multiprocess mode, the server."""
