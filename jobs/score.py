"""Ray job: emotion probabilities for every audio file under a prefix (``knd.stages.score.run``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/score.py checkpoint=s3://BUCKET/runs/train/RUN/checkpoint \\
        input=s3://BUCKET/new_audio output=s3://BUCKET/scores.parquet use_gpu=true

Files that fail to decode get a row with the reason; ``strict=true`` makes the job FAILED then.
"""

import sys

from knd.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("score", sys.argv[1:]))
