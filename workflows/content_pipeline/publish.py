"""Publish the reviewed article: write it to ./published as Markdown (stands in for a blog upload).

Reads the draft from the `write` step and the verdict from the `review` step in FOREMAN_INPUTS;
a typed answer from the approver (the file name) is used when given.
"""

import json
import os
import re
import sys
from datetime import date
from pathlib import Path

inputs = json.loads(os.environ.get("FOREMAN_INPUTS", "{}"))
draft = str(inputs.get("write") or "").strip()
if not draft:
    sys.exit("nothing to publish: the write step gave no draft")
answer = (inputs.get("_approval") or {}).get("value") or ""
slug = re.sub(r"[^a-z0-9]+", "-", (answer or draft.splitlines()[0]).lower()).strip("-")[:60] or "article"
out = Path(__file__).parent / "published"
out.mkdir(exist_ok=True)
target = out / f"{date.today():%Y-%m-%d}-{slug}.md"
notes = (inputs.get("review") or {}).get("notes", "")
target.write_text(draft + "\n" + (f"\n<!-- review: {notes} -->\n" if notes else ""))
print(json.dumps({"published": target.name, "bytes": target.stat().st_size}))
