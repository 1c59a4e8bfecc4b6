# The knd image for `ray up` clusters (cluster/aws.yaml, cluster/gcp.yaml) and CI's tag builds:
#   docker build -t knd:dev .
# Ray and Python match pyproject.toml (ray 2.60.0, Python 3.11); the GPU variant carries CUDA and
# runs on CPU-only hosts too, so the head and the GPU workers share one image.
FROM rayproject/ray:2.60.0-py311-gpu

# The base image's own non-root user `ray` (uid 1000, group `users` 100), by number so that
# Kubernetes' runAsNonRoot can check it; its conda Python, which it owns, is first on PATH.
USER 1000:100
# Made by that user: a WORKDIR that does not exist yet would belong to root.
RUN mkdir /home/ray/knd
WORKDIR /home/ray/knd

# Dependencies first, from pyproject.toml alone, so a source change does not reinstall torch.
COPY --chown=1000:100 pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project, installed as a wheel would be (not editable): the default configs travel
# inside the package (knd/configs links to configs/), so knd runs from any folder. jobs/ stays
# here for `ray job submit` entry points.
COPY --chown=1000:100 README.md ./
COPY --chown=1000:100 configs/ configs/
COPY --chown=1000:100 jobs/ jobs/
COPY --chown=1000:100 knd/ knd/
RUN pip install --no-cache-dir --no-deps . && rm -rf build knd.egg-info

# No credentials in the image: S3/GCS access comes from the node's IAM role or service account,
# a job's WANDB_API_KEY from its runtime environment (docs/guides/cluster.md).
