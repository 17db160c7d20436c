"""Collect the logs from a folder (default ./incoming) into ./work: the first chore of the log pipeline.

Usage: collect.py [SOURCE]   (SOURCE relative to this folder, or absolute)
"""

import json
import shutil
import sys
from pathlib import Path

here = Path(__file__).parent
source = here / (sys.argv[1] if len(sys.argv) > 1 else "incoming")
if not source.is_dir():
    sys.exit(f"collect.py: no such folder {source}")
work = here / "work"
work.mkdir(exist_ok=True)
copied = []
for log in sorted(source.glob("*.log")):
    shutil.copy(log, work / log.name)
    copied.append(log.name)
print(json.dumps({"count": len(copied), "files": copied}))
