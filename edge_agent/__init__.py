"""edge-agent: a fully offline voice assistant for Raspberry Pi-class hardware."""

__version__ = "0.1.0"
