"""Logs: the structlog pipeline, safe JSON rendering, installing it into logging."""
