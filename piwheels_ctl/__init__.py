"""piwheels-ctl: build wheels from sdists on machines PyPI has no wheels for, and serve them."""

__version__ = "0.1.0"
