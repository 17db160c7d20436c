"""Collect today's logs from ./incoming into ./work (the first chore of the log pipeline)."""

import json
import shutil
from pathlib import Path

here = Path(__file__).parent
work = here / "work"
work.mkdir(exist_ok=True)
copied = []
for log in sorted((here / "incoming").glob("*.log")):
    shutil.copy(log, work / log.name)
    copied.append(log.name)
print(json.dumps({"count": len(copied), "files": copied}))
