"""Bandwidth prediction, a third-party mamba4net task plugin written against mamba4net.api only."""
