"""Command-line tools: the demo and the doctor."""
