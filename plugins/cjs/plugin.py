"""Entry point of the cjs plugin: registers nothing yet."""
