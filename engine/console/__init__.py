"""The web console: a small ASGI app (Starlette, Jinja2, server-sent events).

This package is the shell: sign-in, layout, assets, metrics and the engine's own
screens (dashboard, devices, integrations, settings). The layers above the
engine add their pages and actions through the ``synvoice.console`` entry
points (``engine.plugins``): ``projections.console`` the read pages over the
views, ``devices.console`` the actions of the console's own device agent.

It runs in its own process (``python -m engine.console``), started and
supervised by ``synvoice serve`` (``engine.console.supervise``).
"""
