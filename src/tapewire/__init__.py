"""tapewire: a flight recorder for AI agents, on the wire between agent and provider."""

__version__ = "0.1.0"
