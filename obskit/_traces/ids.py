"""The hex text of span ids (cached per span context): see :mod:`obskit._fast.ids`."""

from obskit._fast.ids import flags_and_validity, hex_ids

__all__ = ["flags_and_validity", "hex_ids"]
