"""What agents may touch: each tool, its guard, the scope check and the audit log. Knows nothing of flows."""
