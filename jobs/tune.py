"""Ray job: cross-actor-fold search with Ray Tune, the same ``knd.stages.tune.run`` as ``knd tune``.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/tune.py data=s3://BUCKET/features storage_path=s3://BUCKET/runs/tune \\
        gpus_per_trial=0.5

Trials on several nodes share results only through ``storage_path``, so give it S3 or GCS; an
interrupted search goes on with ``resume=s3://BUCKET/runs/tune/<experiment>``.
"""

import sys

from knd.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("tune", sys.argv[1:]))
