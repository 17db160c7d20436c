"""Exceptions a tool raises when a guard says no.

A refusal is not a crash: the agent sees the message (so it can try something
allowed), the audit log records it, and nothing was touched.
"""

from __future__ import annotations


class ToolRefused(Exception):
    """A guard refused the call before it did anything. The message says what is allowed."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"{tool} refused: {reason}")
