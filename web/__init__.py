"""Read-only admin pages over the call log, served by the controller (aiohttp).

``create_app(store, live=..., title=..., timezone=...)`` builds the app; see
``web.app`` for the routes and ``web.pages`` for the HTML.
"""

from web.app import CallLog, LiveView, create_app

__all__ = ["CallLog", "LiveView", "create_app"]
