"""A job's identity and its directory on every node.

A retry must find the job its earlier try started (to adopt it, or to return its result), and a
re-run of the same try too. So the job id is derived from what stays the same across tries: this
deployment's identity (:func:`airflow_provider_prime.deployment.deployment_id`) and the task
instance ``(dag_id, run_id, task_id, map_index)``; never from the try number. Two deployments
sharing pods, or two DAGs with the same task id, never share a job id.

The id looks like ``train-3f9a1c5e2d4b7a10c5f3e9d1`` (a slug of the task id, at most 20 characters,
then 6 hex digits of the deployment and 18 of the task instance): safe as a file name and in a
shell word, readable in ``ls``. The job's directory on a node is ``.prime-jobs/<job id>`` under the
SSH user's home directory (:func:`job_dir`); the job's files are described in :mod:`.job_script`.
"""

from __future__ import annotations

import hashlib
import json
import re

#: Where the job directories live on a node, relative to the SSH user's home directory.
JOB_ROOT = ".prime-jobs"
#: Characters of the task id kept in the job id.
SLUG_LENGTH = 20
_DEPLOYMENT_TAG = 6
_TI_TAG = 18
#: What every job id looks like (also what :func:`job_dir` accepts).
JOB_ID = re.compile(rf"[a-z0-9-]{{1,{SLUG_LENGTH}}}-[0-9a-f]{{{_DEPLOYMENT_TAG + _TI_TAG}}}")


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def job_id(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1, *, deployment: str) -> str:
    """The id of the job of one task instance of one deployment: the same for every try of it."""
    index = -1 if map_index is None else int(map_index)
    slug = re.sub(r"[^a-z0-9]+", "-", task_id.lower()).strip("-")[:SLUG_LENGTH].strip("-") or "job"
    deployment_tag = _digest("job-deployment", deployment)[:_DEPLOYMENT_TAG]
    ti_tag = _digest("job", deployment, dag_id, run_id, task_id, index)[:_TI_TAG]
    return f"{slug}-{deployment_tag}{ti_tag}"


def job_dir(job: str, root: str = JOB_ROOT) -> str:
    """The job's directory on a node: ``<root>/<job id>``, relative to the SSH user's home unless
    ``root`` is absolute. The launch resolves it to an absolute path on the node
    (``PRIME_JOB_DIR`` holds that)."""
    if not JOB_ID.fullmatch(job):
        raise ValueError(f"not a job id: {job!r}")
    return f"{root.rstrip('/')}/{job}"


__all__ = ["JOB_ID", "JOB_ROOT", "job_dir", "job_id"]
