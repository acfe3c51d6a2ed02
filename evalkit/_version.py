"""The package version, in one place (read by ``evalkit.__version__`` and stored with every run)."""

__version__ = "0.1.0"
