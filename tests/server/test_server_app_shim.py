"""Component strings users deployed keep working for one release (README, Changelog)."""

from __future__ import annotations


def test_the_deprecated_server_app_component_string_still_loads():
    """``fedglobal.server_app:app`` (deployed component strings) is the new ServerApp."""
    from fedglobal.engines import SERVER_APP, load_component

    assert load_component("fedglobal.server_app:app") is load_component(SERVER_APP)
