"""What a dataset is: a loader of (train, test) problems, with hooks for what only it knows.

A dataset is one file: a :class:`Dataset` subclass and, when it has options of its own, its
``Config`` (a :class:`codistill.config.DatasetConfig` subclass with its checks); its YAML in
``conf/dataset/`` names the class with ``_target_``.  The run calls the hooks in order:
:meth:`load`, then :meth:`prepare` (after the run's context exists: e.g. code_alpaca's teacher
writes the tests), then :meth:`describe` of the dataset evaluated on (the split's figures).
Light on purpose: :func:`codistill.config.validate` imports the dataset's file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from codistill.config import DatasetConfig
from codistill.tasks.base import Problem


class Dataset(ABC):
    Config = DatasetConfig

    def __init__(self, cfg) -> None:
        self.cfg = cfg  # this dataset's validated config

    @abstractmethod
    def load(self) -> tuple[list[Problem], list[Problem]]:
        """(train, test) problems: every dataset says how it loads them."""

    def prepare(self, ctx) -> dict:
        """Finish ``ctx.train`` / ``ctx.test`` in place once models can be loaded; returns data
        figures for metrics.json.  Most datasets need nothing."""
        return {}

    def describe(self, train: list[Problem] | None, test: list[Problem]) -> dict:
        """Figures that say what split was evaluated (metrics.json); ``train`` is None when this
        dataset is only evaluated on (``dataset@eval_dataset``)."""
        return {}
