"""qubus: schedule quantum circuits across a fleet of emulated, networked QPUs over NATS."""

__version__ = "0.1.0"
