#!/usr/bin/env bash
# The README's quick start (`bash quickstart.sh`), with the seconds since its start in front of each command it runs:
# where the README's "how long each step takes" comes from (tests/test_readme.py reads these logs).
#
#   bash ci/time_quickstart.sh                           # ci/quickstart_cpu.log
#   TUTORIAL_DEVICE=one-gpu bash ci/time_quickstart.sh   # ci/quickstart_one-gpu.log
#
# LOG_DIR puts the log elsewhere (on a lent machine, out of the folder that each call copies over).
set -euo pipefail
cd "$(dirname "$0")/.."
log="${LOG_DIR:-ci}/quickstart_${TUTORIAL_DEVICE:-cpu}.log"
{ nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"; } > "$log"
# bash -x prints each command before it runs, after PS4: the seconds so far and the file it is in. PS4 is set from
# BASH_ENV because bash run as root does not take it from the environment.
ps4="$(mktemp)" && trap 'rm -f "$ps4"' EXIT
echo 'PS4='"'"'+ ${SECONDS}s ${BASH_SOURCE##*/}: '"'" > "$ps4"
BASH_ENV="$ps4" bash -x quickstart.sh >> "$log" 2>&1 && status=0 || status=$?
echo "quickstart: exit status $status after ${SECONDS}s" >> "$log"
tail -n 3 "$log"
exit "$status"
