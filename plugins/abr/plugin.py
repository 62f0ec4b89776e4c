"""Entry point of the abr plugin: registers nothing yet."""
