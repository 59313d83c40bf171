"""Admin pages over the call log and the agent panel, served by the controller (aiohttp).

``create_app(store, accounts=..., live=..., title=..., timezone=...)`` builds
the app; see ``web.app`` for the call-log routes, ``web.auth`` for who may
use which route, ``web.users`` for accounts and the audit trail, and
``web.pages`` / ``web/templates`` for the HTML.
"""

from web.app import CallLog, LiveView, create_app

__all__ = ["CallLog", "LiveView", "create_app"]
