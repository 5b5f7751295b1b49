"""MCX migration emulator: a network emulator for 3GPP Mission Critical services."""

__version__ = "0.1.0"
