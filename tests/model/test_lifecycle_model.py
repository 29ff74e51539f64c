"""The model test of the pod lifecycle (see :mod:`tests.model.machine`).

Bounded profile (in ``make test``): 40 derandomized examples of up to 30 steps, no example
database and no shrinking, so it never flakes and fails fast (about 40 s on a loaded 2-core
machine). It tolerates the violations of the known open bugs (``KNOWN_OPEN`` in the machine, by
the tag in their signature) and prints each one it met; ``test_found.py`` replays them.

Long profile (``make test-model``): ``PRIME_MODEL_EXAMPLES`` examples of up to ``PRIME_MODEL_STEPS``
steps each, random seeds, shrinking on; known open bugs fail it unless ``PRIME_MODEL_TOLERATE``
names their tags (e.g. ``#shared-name,#verdict-lost``) or signature prefixes (``2@reaper_runs``).
It prints how many steps it checked, the time spent per rule, and what it tolerated.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

from tests.model.machine import KNOWN_OPEN, TOLERATED, LifecycleModel

EXAMPLES = int(os.environ.get("PRIME_MODEL_EXAMPLES", "0") or 0)
LONG = EXAMPLES > 0

PROFILE = settings(
    max_examples=EXAMPLES if LONG else 40,
    stateful_step_count=int(os.environ.get("PRIME_MODEL_STEPS", "40" if LONG else "30")),
    derandomize=not LONG,
    # Bounded: no shrinking (it can take minutes); the failing example is reported as it ran.
    phases=list(Phase) if LONG else [Phase.explicit, Phase.generate],
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)


def test_the_lifecycle_keeps_its_promises() -> None:
    LifecycleModel.total_steps = 0
    try:
        LifecycleModel.TestCase.settings = PROFILE
        LifecycleModel.tolerate = TOLERATED + (() if LONG else tuple(KNOWN_OPEN))
        LifecycleModel.TestCase().runTest()
    finally:
        LifecycleModel.tolerate = ()
        print(f"\nmodel: {LifecycleModel.total_steps} steps checked")
        for name, seconds in LifecycleModel.timings.most_common():
            print(f"  {name}: {LifecycleModel.counts[name]} times, {seconds:.1f} s")
        for signature, count in LifecycleModel.tolerated.most_common():
            print(f"\ntolerated {signature} x{count}, first seen:\n  {LifecycleModel.examples[signature]}")
