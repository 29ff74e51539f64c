"""Where a deferred task's success was recorded: by its trigger (no worker resumed it), or not.

The success line (``All pods ready: ...``) is logged by whoever ends the task: the trigger, in the
triggerer's log file of that attempt (``attempt=1.log.trigger.<job id>.log``), when the wait ends in
the triggerer; the resumed ``execute_complete``, in the worker's file (``attempt=1.log``), when a
worker process had to resume it. See ``airflow_provider_prime/triggers/task_end.py``.
"""

from __future__ import annotations

from scripts.airflow_stack import AirflowStack

READY = "All pods ready"


def log_files(
    stack: AirflowStack, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> dict[str, str]:
    folder = stack.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    return {path.name: path.read_text(errors="replace") for path in sorted(folder.glob("*.log"))}


def assert_ended_in_triggerer(
    stack: AirflowStack, dag_id: str, run_id: str, task_id: str, map_index: int = -1, line: str = READY
) -> None:
    """The trigger logged the success ``line`` and no worker resumed the task to log it again."""
    files = log_files(stack, dag_id, run_id, task_id, map_index)
    worker = files.get("attempt=1.log", "")
    triggers = {name: text for name, text in files.items() if ".trigger." in name}
    assert any(line in text for text in triggers.values()), (task_id, map_index, sorted(files))
    assert line not in worker, (task_id, map_index, worker[-3000:])
