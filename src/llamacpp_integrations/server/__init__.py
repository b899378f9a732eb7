"""An OpenAI-compatible HTTP server on the native engine (the ``server`` extra).

``llamacpp-integrations serve`` or ``python -m llamacpp_integrations.server``; see
:func:`main` and the README's "Server" section.
"""

from __future__ import annotations

from collections.abc import Sequence

from .app import create_app
from .settings import ModelConfig, ServerSettings, parse_settings

__all__ = ["ModelConfig", "ServerSettings", "create_app", "main", "parse_settings"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags (and environment, and config file) and serves until interrupted."""
    import uvicorn

    settings = parse_settings(argv)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info" if settings.verbose else "warning",
        timeout_graceful_shutdown=5,
    )
    return 0
