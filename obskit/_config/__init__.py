"""Configuration: the settings table, its value kinds, and the generated reference page."""
