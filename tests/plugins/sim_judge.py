"""Placeholder; filled by the area that owns it."""
