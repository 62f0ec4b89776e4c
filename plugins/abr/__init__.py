"""abr plugin (work in progress)."""
