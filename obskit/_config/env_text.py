"""A setting's value written the way an environment variable spells it.

``obskit config`` and the configuration reference show values as a person would set
them: ``true``/``false`` rather than Python's ``True``/``False``, lists and pairs
comma-separated, and ``-`` for "not set".
"""

from __future__ import annotations

from collections.abc import Mapping

#: What an unset value (``None``, an empty list or mapping) is shown as.
UNSET = "-"


def env_text(value: object) -> str:
    """``value`` as the text of the environment variable that would give it."""
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(env_text(item) for item in value) or UNSET
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in value.items()) or UNSET
    return str(value)
