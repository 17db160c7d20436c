"""Print how full a mount is and exit 1 above a threshold (the cron check on nas01).

Usage: python check_disk.py [--mount /mnt/tank] [--limit 85]
"""

import argparse
import json
import shutil
import sys

DEFAULT_LIMIT = 85  # percent; the same threshold as the DiskAlmostFull alert


def percent_used(mount: str) -> float:
    usage = shutil.disk_usage(mount)
    return round(100 * usage.used / usage.total, 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mount", default="/mnt/tank")
    parser.add_argument("--limit", type=float, default=DEFAULT_LIMIT)
    args = parser.parse_args()
    used = percent_used(args.mount)
    print(json.dumps({"mount": args.mount, "percent": used, "limit": args.limit}))
    return 1 if used > args.limit else 0


if __name__ == "__main__":
    sys.exit(main())
