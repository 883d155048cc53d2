"""Deterministic fault injection for the chaos tests; a no-op unless ``CODISTILL_FAULT`` is set.

``CODISTILL_FAULT="<point>:<arg>[:<action>]"`` makes the process send itself a signal when it
reaches ``point`` with ``arg``, so a test can kill a real run at a chosen place instead of
racing a timer:

    train_step:3      after optimizer step 3 (and any checkpoint written there)
    generate_batch:1  after the first generated batch of this process is cached
    stage:eval        when a stage starts (``train``, ``eval``)

``action``: ``kill`` (SIGKILL, the default: an OOM kill or a lost node), ``term`` (SIGTERM: a
scheduler's preemption or timeout) or ``int`` (SIGINT: Ctrl-C).
"""

from __future__ import annotations

import os
import signal

ACTIONS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}
_counts: dict[str, int] = {}


def parse(spec: str) -> tuple[str, str, signal.Signals]:
    """``"train_step:3:term"`` -> (``"train_step"``, ``"3"``, SIGTERM)."""
    parts = spec.strip().split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"CODISTILL_FAULT={spec!r}: expected <point>:<arg>[:kill|term|int]")
    action = parts[2] if len(parts) == 3 else "kill"
    if action not in ACTIONS:
        raise ValueError(f"CODISTILL_FAULT={spec!r}: unknown action {action!r}; known: {sorted(ACTIONS)}")
    return parts[0], parts[1], ACTIONS[action]


def hit(point: str, arg: object = None) -> None:
    """Mark that ``point`` was reached (``arg``: its step number or name; None: count the calls)."""
    spec = os.environ.get("CODISTILL_FAULT")
    if not spec:
        return
    where, want, sig = parse(spec)
    if where != point:
        return
    if arg is None:
        _counts[point] = _counts.get(point, 0) + 1
        arg = _counts[point]
    if str(arg) == want:
        os.kill(os.getpid(), sig)
