"""What every benchmark records beside its figures: the machine it ran on and how busy it was.

Start a :class:`Machine` before the measured work and put ``machine.record()`` into the results
under ``"machine"``: the load average before and after says whether other work shared the cores
(the figures of a shared machine are ratios against a baseline measured in the same run).
:func:`write_results` writes the report.
"""

from __future__ import annotations

import json
import os
import platform

from knd.data import storage


class Machine:
    """The machine a benchmark runs on; the load average is read at start and at ``record``."""

    def __init__(self) -> None:
        self.load_before = os.getloadavg()

    def record(self, **extra) -> dict:
        """``{"cpus", "python", "load_average_before", "load_average_after", **extra}``."""
        return {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in self.load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            **extra,
        }


def write_results(path, report: dict, indent: int = 2) -> None:
    """Write a benchmark's JSON report whole or not at all (an interrupted run never leaves half
    a file in ``bench/results/``), and say where it went."""
    storage.write_text(str(path), json.dumps(report, indent=indent) + "\n")
    print(f"wrote {path}")
