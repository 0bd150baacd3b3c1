"""Analyses over derived sessions: pure functions of what `tapewire.query` returns."""
