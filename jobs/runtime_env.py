"""Print a Ray runtime env (YAML) that hands a job this shell's S3 and wandb credentials.

    ray job submit --address http://127.0.0.1:8265 --working-dir . \\
        --runtime-env <(python jobs/runtime_env.py) -- python jobs/train.py data=s3://BUCKET/features

The values are read from the environment and passed through a pipe, so no secret is typed on the
command line, kept in shell history, written to disk or committed. Ray stores a job's runtime env
with the job, so keep the dashboard private (``ray dashboard`` tunnels it over SSH), and prefer a
node's IAM role or service account for storage where the cloud offers one.
"""

import os
import sys

import yaml

PASSED = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",  # all that storage.py reads
    "WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY",
)  # fmt: skip


def runtime_env(environ=os.environ) -> dict:
    """``{"env_vars": ...}`` holding those of ``PASSED`` that are set (not empty) in ``environ``."""
    return {"env_vars": {name: environ[name] for name in PASSED if environ.get(name)}}


if __name__ == "__main__":
    yaml.safe_dump(runtime_env(), sys.stdout)
