"""The safeguarding console (SPEC 5.8): a web app beside the proxy where the DSL, the computing lead and
the head teacher do their job in a browser, the office keeps the supply register, the network manager
sees the system's health and governors see figures.

Modules: ``app`` (Flask app: signing in, sessions, CSRF, security headers) with one blueprint per area
(``alerts``, ``people``, ``office``, ``school``); ``web`` (what pages share); ``state`` (the config and what
is built from it, reloaded on change); ``signin`` (passwords and throttling); ``sessions``; ``data`` (reads,
and what the access rules need to decide); ``words`` (plain English); ``exports`` (CPOMS, CSV); ``health``;
``certs`` (its HTTPS certificate from the proxy's CA); ``server`` (HTTPS serving).

Who may see what is decided only by :mod:`schoolproxy.monitoring.access`.
"""

from schoolproxy.console.app import create_app

__all__ = ["create_app"]
