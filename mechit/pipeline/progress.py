"""The overall progress bar of ``mechit compare``.

>>> bar = Progress(enabled=False)
>>> bar.start([2.0, 1.0]); bar.advance(5.0); bar.partial      # capped at the step's weight
2.0
>>> bar.tick("first"); bar.weights, bar.partial
([1.0], 0.0)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tqdm.auto import tqdm


class Progress:
    """One overall bar over the steps of all stages, with the stage name and an ETA.

    Each step has a weight (its expected cost, :func:`mechit.pipeline.stages.stage_plan`),
    so the ETA is not skewed by cheap steps; a long step can report partial progress with
    :meth:`advance`. Each analysis shows its own inner bar as well.
    """

    def __init__(self, enabled: bool = True):
        self.weights: list[float] = []
        self.partial = 0.0  # progress already shown inside the current step
        self.lock = threading.Lock()
        self.bar = tqdm(total=0, desc="compare", unit="step", disable=not enabled, position=0,
                        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]")

    def start(self, weights: Sequence[float]) -> None:
        """Begin timing the planned steps (their weights in tick order); the ETA starts here."""
        self.weights = list(weights)
        self.bar.reset(total=sum(self.weights))

    def stage(self, name: str) -> None:
        """Show the name of the stage that runs now."""
        self.bar.set_description(f"compare [{name}]")

    def advance(self, units: float) -> None:
        """Partial progress inside the current step, capped at the step's weight."""
        with self.lock:
            room = (self.weights[0] if self.weights else 0.0) - self.partial
            units = min(units, room)
            if units > 0:
                self.partial += units
                self.bar.update(units)

    def tick(self, label: str) -> None:
        """The current step is finished."""
        with self.lock:
            weight = self.weights.pop(0) if self.weights else 0.0
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(max(0.0, weight - self.partial))
            self.partial = 0.0

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
