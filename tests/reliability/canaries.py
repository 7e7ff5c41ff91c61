"""Canary secrets the PII tests send or make the apps send; none may reach telemetry."""

SESSION_CANARY = "canary-setcookie-3b9f"  # the Set-Cookie value of the apps' /login
