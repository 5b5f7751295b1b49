"""Packet capture of a run, and reading captures back."""
