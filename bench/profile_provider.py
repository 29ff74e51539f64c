"""Where the provider's CPU per interval goes: ``bench.triggers``' steady window under cProfile.

    python -m bench.profile_provider                       # N = 1,000 triggers over 250 pods
    python -m bench.profile_provider --cases 5000:500 --top 50

Runs ``bench.triggers`` for the ``provider`` kind only and profiles the event loop's thread from
the first reading of the steady window to the second (see :mod:`bench.trigger_run`): the polling
of N waiting triggers, the harness's heartbeat and memory sampling included, nothing of their
start or of the detection. Prints the functions by own time and by cumulative time, and the share
of the window's CPU that the harness (``LoopMonitor``) takes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
from collections.abc import Sequence
from typing import Any

from bench import trigger_run, triggers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="1000:250")
    parser.add_argument("--interval", default="5")
    parser.add_argument("--top", type=int, default=35)
    options = parser.parse_args(argv)

    profile = cProfile.Profile()
    readings = 0
    loops: list[asyncio.AbstractEventLoop] = []
    read, run_case = trigger_run._read, triggers.run_case

    def toggle() -> None:
        nonlocal readings
        readings += 1
        if readings == 1:
            profile.enable()  # the loop's thread: the triggers, the poller, the heartbeat
        elif readings == 2:
            profile.disable()

    def reading(*args: Any) -> Any:
        result = read(*args)
        loops[-1].call_soon_threadsafe(toggle)
        return result

    async def case(*args: Any, **kwargs: Any) -> Any:
        loops.append(asyncio.get_running_loop())
        return await run_case(*args, **kwargs)

    trigger_run._read = reading  # type: ignore[assignment]
    triggers.run_case = case  # type: ignore[assignment]
    triggers.main(
        ["--cases", options.cases, "--kinds", "provider", "--interval", options.interval, "--no-write"]
    )
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(options.top)
        print(out.getvalue())
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values())
    harness = sum(
        entry[3]
        for (path, _line, name), entry in stats.items()
        if path.endswith("trigger_run.py") and name == "run"
    )
    print(f"profiled own time {total:.3f} s; LoopMonitor.run cumulative {harness:.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
