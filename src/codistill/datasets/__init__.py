"""Datasets: each is one file holding its loader, hooks and config (see :mod:`codistill.datasets.base`);
the YAML in ``conf/dataset/`` names its class with ``_target_``."""

from __future__ import annotations

from codistill.datasets.base import Dataset
from codistill.tasks.base import Problem


def build_dataset(cfg) -> Dataset:
    """The dataset object for ``cfg`` (a validated DatasetConfig subclass: its ``_target_`` imports)."""
    from codistill.plugins import locate

    return locate(cfg._target_, "dataset._target_")(cfg)


def load_problems(cfg) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems for ``cfg`` (a validated dataset config)."""
    return build_dataset(cfg).load()


__all__ = ["Dataset", "build_dataset", "load_problems"]
