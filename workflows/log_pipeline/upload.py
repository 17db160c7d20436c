"""'Upload' the redacted logs: move them into ./archive (stands in for the real upload)."""

import json
import shutil
from pathlib import Path

here = Path(__file__).parent
archive = here / "archive"
archive.mkdir(exist_ok=True)
moved = []
for log in sorted((here / "work").glob("*.log")):
    shutil.move(str(log), archive / log.name)
    moved.append(log.name)
print(json.dumps({"archived": moved}))
