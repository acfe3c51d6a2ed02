"""Serving: the Image Studio edit endpoint and model selector page over a run's tier defaults
(``evalkit serve``; see :mod:`evalkit.serve.app` and docs/serve.md)."""

from __future__ import annotations

from evalkit.serve.app import ServeConfig, create_app, make_config, serve

__all__ = ["ServeConfig", "create_app", "make_config", "serve"]
