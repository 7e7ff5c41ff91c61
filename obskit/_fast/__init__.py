"""The accelerator wing: the only place that relies on a dependency's private internals.

Every module here registers its accelerator with :mod:`obskit._fast.status`: a check
that decides once, at ``init()``, whether the installed dependency still has the
layout it was written for, and the public-API path it falls back to inside its own
entry point. Outside this package obskit uses only documented APIs, so a
dependency's release can at worst turn an accelerator off (``obskit doctor`` says
which and why), never break a contract. ``OBSKIT_FAST_PATHS=0`` turns them all off.
"""

#: The accelerator modules, imported by :func:`obskit._fast.status.decide`.
MODULES = (
    "obskit._fast.exposition",
    "obskit._fast.histogram",
    "obskit._fast.ids",
    "obskit._fast.log_lines",
    "obskit._fast.propagation",
    "obskit._fast.spans",
)
