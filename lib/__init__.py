"""Shared library of the DSM on-premises agent."""

__version__ = "0.1.0"
