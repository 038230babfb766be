"""Named fault points, so that kill tests exercise every path on every run, not by timing.

A test starts the bot with ``FORUM_FAULTS=after_platform_call:3`` (a comma-separated list of
``name`` or ``name:count``): the process kills itself with SIGKILL the ``count``-th time (1 by
default) execution reaches ``fault_point("after_platform_call")``. Unset — always in
production — a fault point costs one dictionary lookup.

Points in the code:
- ``before_platform_call``: the outbox is about to call the platform for a post;
- ``after_platform_call``: the platform answered, the answer is not yet committed;
- ``in_merged_post``: a merged post's members are recorded as in flight, the post not made;
- ``during_catch_up``: Discord history is being read after a reconnect.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

ENVIRONMENT = "FORUM_FAULTS"


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for part in spec.split(","):
        name, _, count = part.strip().partition(":")
        if name:
            points[name] = int(count) if count.isdigit() and int(count) > 0 else 1
    return points


# Read from the environment on first use, not at import time.
_armed: dict[str, int] | None = None


def arm(spec: str) -> None:
    """Arm fault points in this process (tests of the mechanism itself)."""
    global _armed
    _armed = _parse(spec)


def fault_point(name: str) -> None:
    """Kill the process here if the test armed this point and its count is reached."""
    global _armed
    if _armed is None:
        _armed = _parse(os.environ.get(ENVIRONMENT, ""))
    if name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] > 0:
        return
    # Written to stderr before dying so the test can assert that its fault fired.
    sys.stderr.write(f"FAULT {name}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
