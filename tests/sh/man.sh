#!/usr/bin/env bash
# The manual pages (docs/man) format without a warning.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v groff >/dev/null || { echo "groff is not installed"; exit 77; }
for page in "$root"/docs/man/*.[1-9]; do
    warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
    [ -z "$warnings" ] || { echo "$page:"; echo "$warnings"; exit 1; }
    echo "$(basename "$page"): ok"
done
