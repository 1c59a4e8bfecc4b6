"""Ray job: train a model with Ray Train (DDP), the same ``knd.stages.train.run`` as ``knd train``.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/train.py data=s3://BUCKET/features run_dir=s3://BUCKET/runs/train \\
        recipe=resnet18 train.num_workers=2

A multi-node run needs ``run_dir`` on shared storage (S3/GCS) for its checkpoints; a misspelt
key ends the job FAILED, with the key named in ``ray job logs``.
"""

import sys

from knd.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train", sys.argv[1:]))
