"""Checked by `mypy --strict` in test_typing.py: obskit's decorators keep user types.

Each `# type: ignore[...]` marks a line mypy *must* reject; with
`warn_unused_ignores` (part of --strict) an accepted line fails the check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from typing_extensions import assert_type

import obskit


@obskit.traced
def price(quantity: int, *, currency: str = "EUR") -> float:
    return quantity * 1.5


@obskit.traced(name="billing.charge", attributes={"tier": "gold"}, span=False)
async def charge(order_id: str) -> bool:
    return True


@obskit.traced
def numbers(limit: int) -> Iterator[int]:
    yield from range(limit)


@obskit.traced(histogram=False)
async def stream(limit: int) -> AsyncIterator[int]:
    for n in range(limit):
        yield n


class Cart:
    @obskit.traced
    def total(self, discount: float) -> float:
        return 10.0 - discount


@obskit.span("manual")
def manual(flag: bool) -> str:
    return str(flag)


async def use() -> None:
    assert_type(price(2, currency="USD"), float)
    assert_type(await charge("o-1"), bool)
    assert_type(numbers(3), Iterator[int])
    assert_type(stream(3), AsyncIterator[int])
    assert_type(Cart().total(1.0), float)
    assert_type(manual(True), str)
    price("two")  # type: ignore[arg-type]
    price(2, currency=3)  # type: ignore[arg-type]
    await charge()  # type: ignore[call-arg]
    with obskit.span("block", cart_id=7) as current:
        current.set_attribute("items", 3)
    obskit.counter("orders_total", "Orders.", ["status"]).labels("ok").inc()
    obskit.histogram("latency_seconds", "Latency.").observe(0.1)
    obskit.gauge("depth", "Depth.").set(3)
    obskit.get_logger(__name__).info("typed", n=1)
