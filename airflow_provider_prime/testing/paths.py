"""The API paths the simulator serves, in their canonical spelling (``LIFECYCLE.md``'s table)."""

from __future__ import annotations

API_PREFIX = "/api/v1"
STATUS_PATH = API_PREFIX + "/pods/status"
WHOAMI_PATH = API_PREFIX + "/user/whoami"
#: Pod list and create; a pod is ``PODS_PATH + id``.
PODS_PATH = API_PREFIX + "/pods/"
HISTORY_PATH = API_PREFIX + "/pods/history"
GPUS_PATH = API_PREFIX + "/availability/gpus"
MULTI_NODE_PATH = API_PREFIX + "/availability/multi-node"
GPU_SUMMARY_PATH = API_PREFIX + "/availability/gpu-summary"
