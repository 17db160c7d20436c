"""How full a disk is: prints one JSON line, {"mount": ..., "percent": ...}, for later steps.

    python check_disk.py [--mount /srv]     (default: your home folder's disk)
"""

import argparse
import json
import shutil
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--mount", default=str(Path.home()))
mount = parser.parse_args().mount
usage = shutil.disk_usage(mount)
print(f"{mount}: {usage.used / 2**30:.1f} of {usage.total / 2**30:.1f} GiB used")
print(json.dumps({"mount": mount, "percent": round(100 * usage.used / usage.total, 1)}))
