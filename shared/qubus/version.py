"""The version of qubus, which every service reports (``$SRV`` replies) and ``qubus --version``
prints."""

__version__ = "0.1.0"
