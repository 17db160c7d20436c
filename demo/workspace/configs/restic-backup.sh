#!/usr/bin/env bash
# Nightly restic backup of nas01's datasets to the offsite USB disk.
# cron on nas01: 30 1 * * * /root/bin/restic-backup.sh >> /var/log/restic-backup.log 2>&1
set -euo pipefail

export RESTIC_REPOSITORY=/mnt/offsite/restic
export RESTIC_PASSWORD_FILE=/root/.restic-password   # the password itself is in Bitwarden

backup() {
  mountpoint -q /mnt/offsite || { echo "offsite disk not mounted"; exit 2; }
  restic backup /mnt/tank/documents /mnt/tank/photos /mnt/tank/paperless --tag nightly
}

prune() {
  restic forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune
}

weekly_copy() {
  # Sundays at 04:00 (separate cron line): copy the repository to Backblaze B2.
  restic copy --repo2 b2:sam-homelab-backups:restic
}

backup
prune
curl -fsS -d "restic nightly ok" https://ntfy.sam-home.example/homelab-alerts >/dev/null
