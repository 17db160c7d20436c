"""Foreman: LLM agents that do real work, planned by ControlFlow and run on Prefect.

Importing any part of Foreman first makes the stack offline-safe (see `runtime`),
because ControlFlow and Prefect read their settings once, at import.
"""

from foreman.runtime import prepare_environment

prepare_environment()

__version__ = "0.1.0"
