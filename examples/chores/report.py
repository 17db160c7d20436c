"""Says what the disk check found (its result arrives as JSON in FOREMAN_INPUTS)."""

import json
import os

found = json.loads(os.environ.get("FOREMAN_INPUTS", "{}")).get("check_disk", {})
print(f"{found.get('mount', '?')} is {found.get('percent', '?')}% full")
print(json.dumps({"ok": found.get("percent", 0) < 90}))
