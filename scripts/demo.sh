#!/usr/bin/env bash
# The main job end to end on the synthetic corpus with a local Ray:
# synth -> prepare (log-mel, prosody, eGeMAPS) -> train (the default recipe, fused_cnn: 2 DDP
# workers, no validation group) -> evaluate -> score.
# Extra key=value arguments go to `knd train` (e.g. optim.epochs=3 for a quick look).
# Each command prints a header, one line per unit of work and a summary; Ray's own logs stay in
# /tmp/ray/session_latest/logs (KND_VERBOSE=1 shows them).
set -euo pipefail
out="${1:-demo}"
shift || true
knd=".venv/bin/knd"

"$knd" synth out="$out/corpus"
echo
"$knd" prepare input="$out/corpus" output="$out/features"
echo
"$knd" train data="$out/features" train.num_workers=2 \
  run_dir="$out/runs" name=default "$@"
run="$out/runs/default"
echo
"$knd" evaluate checkpoint="$run/checkpoint" data="$out/features" out="$out/evaluate"
echo
# Scoring takes any folder of audio; here, one actor of the synthetic corpus.
"$knd" score checkpoint="$run/checkpoint" input="$out/corpus/Actor_01" output="$out/scores.csv"

cat <<EOF2

demo finished:
  scores              $out/scores.csv
  evaluation report   $out/evaluate/report.html
  training report     $run/report.html (open it in a browser; report.md beside it)
EOF2
