"""Deprecated home of the ServerApp: ``fedglobal.server_app:app`` keeps working for one
release; use ``fedglobal.server.app:app`` (README, changelog)."""

from fedglobal.server.app import app

__all__ = ["app"]
