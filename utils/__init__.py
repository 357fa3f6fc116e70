"""Shared helpers: run directory, atomic and safe file I/O, plots."""
