"""Ray job: audio -> log-mel Parquet shards + manifest (the same ``knd.stages.prepare.run`` as the
CLI).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/prepare.py input=s3://BUCKET/ravdess output=s3://BUCKET/features

Inside a job Ray sets RAY_ADDRESS, so Ray Data runs on the cluster the job was submitted to.
"""

import sys

from knd.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("prepare", sys.argv[1:]))
