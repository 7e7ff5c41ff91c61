"""The exceptions obskit raises: only at setup time, never from instrumented code."""

from __future__ import annotations


class ObskitError(Exception):
    """Base class of every exception obskit raises on purpose."""


class ConfigError(ObskitError, ValueError):
    """A setting given to ``obskit.init()`` (or found in the environment) is invalid.

    The message names the setting, the bad value, where it came from and what is
    allowed; the same facts are available as attributes for programs.

    Args:
        setting: The obskit setting name, e.g. ``"traces_sampler"``, or the name of an
            OpenTelemetry variable obskit checks for the SDK, e.g. ``"OTEL_BSP_MAX_QUEUE_SIZE"``.
        value: The value as given (or as read from the environment).
        source: ``"argument"``, ``"env OTEL_TRACES_SAMPLER"``, ...
        allowed: A human description of the allowed values.
        hint: An optional extra sentence (a "did you mean", a package to install).
    """

    def __init__(
        self,
        setting: str,
        value: object,
        source: str,
        allowed: str,
        hint: str = "",
    ) -> None:
        self.setting = setting
        self.value = value
        self.source = source
        self.allowed = allowed
        self.hint = hint
        shown = without_password(value)
        message = f"invalid setting {setting}={shown!r} (from {source}): {allowed}"
        if hint:
            message = f"{message}; {hint}"
        super().__init__(message)


def without_password(value: object) -> object:
    """``value``, a URL's ``user:password@`` shown as ``user:[REDACTED]@`` (an error
    message ends up in logs)."""
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, _, rest = value.partition("://")
        userinfo, at, host = rest.partition("@")
        if at and ":" in userinfo and "/" not in userinfo:
            user = userinfo.split(":", 1)[0]
            return f"{scheme}://{user}:[REDACTED]@{host}"
    return value
