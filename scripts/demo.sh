#!/usr/bin/env bash
# The main job end to end on the synthetic corpus with a local Ray.
set -euo pipefail
out="${1:-demo}"
knd=".venv/bin/knd"
"$knd" synth out="$out/corpus"
echo "demo: synthetic corpus in $out/corpus"
