#!/usr/bin/env bash
# tools/main.sh: set up a fresh Debian machine, build chimera, and run the main job:
# `chimera train` on its embedded default (configs/test.yaml on the built-in corpus, on
# the best backend present), then a short sample from the trained model. Running it
# again resumes the run in runs/test instead of overwriting it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/bootstrap.sh
bash tools/build.sh build
./build/chimera train --resume auto
./build/chimera sample --checkpoint runs/test --prompt "The " --tokens 200 --seed 1
