"""A CSV logger that keeps the rows already in ``metrics.csv``.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so resuming a run into
its own folder erased the history before the resume. ``AppendingCSVLogger`` appends instead; what the
file holds at the start has already been cut back to the resumed step by
``gan_modules.run_folder.set_aside_later_metrics`` (train.py), so the result is one consistent history.
A new column (a metric first logged after the resume) rewrites the file with the wider header, through
a temporary file and a rename.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from gan_modules.atomic_files import atomic_write_text


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's version deletes metrics.csv here. Keep it, and start from its columns so that
        # appended rows line up with the rows already there.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                header = next(csv.reader(handle), [])
            self.metrics_keys = sorted(header)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, buffer.getvalue())


class AppendingCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
