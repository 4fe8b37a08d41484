#!/usr/bin/env bash
# The main job: install what is missing, build, and run the default stream on Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
name="main-$(date +%Y%m%d-%H%M%S)"
exec build/tools/strata train --name "$name" "$@"
