"""cjs plugin (work in progress)."""
