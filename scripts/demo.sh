#!/usr/bin/env bash
# The main job end to end on the synthetic corpus with a local Ray:
# synth -> prepare -> train (the default recipe, plain_cnn: 2 DDP workers, no validation
# group) -> evaluate -> score.
# Extra key=value arguments go to `knd train` (e.g. optim.epochs=3 for a quick look).
set -euo pipefail
out="${1:-demo}"
shift || true
knd=".venv/bin/knd"

"$knd" synth out="$out/corpus"
"$knd" prepare input="$out/corpus" output="$out/features"
"$knd" train data="$out/features" train.num_workers=2 \
  run_dir="$out/runs" name=default "$@"
run="$out/runs/default"
"$knd" evaluate checkpoint="$run/checkpoint" data="$out/features" out="$out/evaluate"

# Scoring takes any folder of audio; here, one actor of the synthetic corpus.
"$knd" score checkpoint="$run/checkpoint" input="$out/corpus/Actor_01" output="$out/scores.csv"

cat <<EOF

demo finished:
  training report     $run/metrics.json, $run/confusion.png
  evaluation report   $out/evaluate/metrics.json, per_actor.csv, confusion.png
  scores              $out/scores.csv
EOF
