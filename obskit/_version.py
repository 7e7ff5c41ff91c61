"""The obskit version, read by the build and by the resource (``telemetry.distro.version``)."""

__version__ = "0.1.0.dev0"
