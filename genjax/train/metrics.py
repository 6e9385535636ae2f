"""Run logs: `metrics.jsonl` (one JSON object per logged step) and TensorBoard events."""

from __future__ import annotations

import json
import os

import numpy as np

METRICS_FILE = "metrics.jsonl"


def _logged_at_or_before(line: str, step: int) -> bool:
    """Whether a log line is a whole record of a step <= `step` (a line torn by a kill or a
    full disk is dropped)."""
    try:
        return json.loads(line)["step"] <= step
    except (ValueError, KeyError, TypeError):
        return False


def _truncate_after(path: str, step: int) -> None:
    """Drops lines logged after `step` (an interrupted run's tail, about to be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [
            line.rstrip("\n") + "\n"
            for line in f
            if line.strip() and _logged_at_or_before(line, step)
        ]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)


class MetricWriter:
    """Appends scalar metrics to `workdir/metrics.jsonl` and TensorBoard event files.

    On resume from `start_step`, lines after that step are removed first, so the file reads
    as one uninterrupted run.
    """

    def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        if not enabled:
            return
        _truncate_after(self.path, start_step)
        # Imported here: tensorboardX imports PyTorch whenever it is installed (a second or
        # more, and its thread pools), which no process that writes no logs should pay for.
        from tensorboardX import SummaryWriter

        self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        scalars = {key: float(np.asarray(value)) for key, value in metrics.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **scalars}) + "\n")
        for key, value in scalars.items():
            self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self.tensorboard.close()
