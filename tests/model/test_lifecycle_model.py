"""The model test of the pod lifecycle (see :mod:`tests.model.machine`).

Bounded profile (in ``make test``): a fixed list of examples, derandomized, so it never flakes.
Long profile (``make test-model``): ``PRIME_MODEL_EXAMPLES`` examples of up to ``PRIME_MODEL_STEPS``
steps each, random seeds; it prints how many steps ran.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

from tests.model.machine import LifecycleModel

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
        LifecycleModel.tolerate_known_open = not LONG
        LifecycleModel.TestCase().runTest()
    finally:
        print(f"\nmodel: {LifecycleModel.total_steps} steps checked")
        for name, seconds in LifecycleModel.timings.most_common():
            print(f"  {name}: {LifecycleModel.counts[name]} times, {seconds:.1f} s")
        for signature, count in LifecycleModel.tolerated.most_common():
            print(f"\ntolerated {signature} x{count}, first seen:\n  {LifecycleModel.examples[signature]}")
