"""schoolproxy: web filtering and safeguarding monitoring for UK schools, as mitmproxy addons."""

__version__ = "0.1.0"
