"""Framework integrations; each module imports its framework, nothing imports them."""
