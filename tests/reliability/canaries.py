"""Canary secrets the PII tests send or make the apps send; none may reach telemetry."""

from __future__ import annotations

SESSION_CANARY = "canary-setcookie-3b9f"  # the Set-Cookie value of the apps' /login

#: Query strings that leaked when only a list of sensitive names was redacted, each with a
#: canary of its own: an e-mail, a one-time code, a ``;``-separated token (urllib reads
#: ``a=1;token=...`` as one value of ``a``) and a percent-encoded name (``%74oken``).
QUERY_CANARIES = {
    "canary-email-51c0": "email=canary-email-51c0%40example.com",
    "canary-otp-8d2e": "otp=canary-otp-8d2e",
    "canary-semicolon-17fa": "a=1;token=canary-semicolon-17fa",
    "canary-encoded-9b44": "%74oken=canary-encoded-9b44",
}
#: One query string with all of them, plus an allowlisted parameter.
LEAKY_QUERY = "&".join([*QUERY_CANARIES.values(), "page=2"])

REFERER_TOKEN = "canary-referer-token-6a31"
REFERER_PASSWORD = "canary-referer-password-0c7d"
#: A Referer with a token in its query and credentials in its authority.
REFERER = f"https://admin:{REFERER_PASSWORD}@shop.example/cart?token={REFERER_TOKEN}&page=3"

#: Personal data a caller put in W3C baggage (the OpenTelemetry SDK quotes the header, an
#: entry or a key in its warnings when one is too long or malformed).
BAGGAGE_CANARY = "canary-baggage-4f18"


def baggage_requests() -> list[list[tuple[str, str]]]:
    """The ``baggage`` headers of three requests carrying :data:`BAGGAGE_CANARY`, each
    rejected by the SDK with a warning that quotes what it rejects: more than the 8192
    bytes of a baggage string (two header lines of about 5 KB, which the server joins
    with ","; gunicorn refuses one header line over 8190 bytes); an entry over 4096 bytes
    whose key is the canary; an invalid entry holding it."""
    first = f"user.email={BAGGAGE_CANARY}%40example.com,{BAGGAGE_CANARY}=" + "x" * 4100
    second = "filler=" + "y" * 5000 + f",bad entry={BAGGAGE_CANARY}"
    return [[("baggage", first), ("baggage", second)], [("baggage", first)], [("baggage", second)]]


#: Every canary of the redaction tests.
ALL = [*QUERY_CANARIES, REFERER_TOKEN, REFERER_PASSWORD, BAGGAGE_CANARY]
