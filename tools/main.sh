#!/usr/bin/env bash
# tools/main.sh: set up a fresh Debian machine, build chimera, and run the main job.
# The main job is `chimera train` on its embedded default; until the trainer lands
# (issue 5) it is `chimera info`, which reports the build, the devices and the backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh
bash tools/build.sh build
./build/chimera info
