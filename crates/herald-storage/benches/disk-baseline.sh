#!/usr/bin/env bash
# Measures the disk's sequential write bandwidth beside the storage benchmarks, with dd:
#   buffered: 16 KiB writes into the page cache, no fsync (what flush=never appends do);
#   synced:   the same volume with a final fdatasync (what the disk sustains).
# Usage: disk-baseline.sh [DIR] [MiB]   (DIR defaults to the cargo target dir, MiB to 2048)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-${CARGO_TARGET_DIR:-$here/../../../target}}"
mib="${2:-2048}"
mkdir -p "$dir"
file="$(mktemp -p "$dir" disk-baseline.XXXXXX)"
trap 'rm -f "$file"' EXIT
rate() { grep -Eo '[0-9.,]+ [kMG]?B/s' | tail -1; }
count=$((mib * 64))
echo "buffered 16KiB writes, ${mib} MiB, no fsync: $(dd if=/dev/zero of="$file" bs=16k count="$count" 2>&1 | rate)"
rm -f "$file"
echo "16KiB writes, ${mib} MiB, then fdatasync:   $(dd if=/dev/zero of="$file" bs=16k count="$count" conv=fdatasync 2>&1 | rate)"
rm -f "$file"
echo "1MiB writes, ${mib} MiB, then fdatasync:    $(dd if=/dev/zero of="$file" bs=1M count="$mib" conv=fdatasync 2>&1 | rate)"
