"""Plugins: a config group option names its code, and the code carries its own schema.

A method (or logger, ...) is one Python file and one YAML.  The YAML names the class with
Hydra's ``_target_`` (``_target_: codistill.methods.ekt.EKT``, or ``my_pkg.my_method.Mine``
for a plugin outside the package); the class names its typed config with a ``Config``
attribute, a dataclass defined in the same file whose ``check(key)`` holds its range and
choice checks.  :func:`codistill.config.validate` finds the schema through the target, so
nothing else in the package lists the plugins.

This module is light on purpose (no torch, no transformers, no codistill sub-packages): plugin
files import it, and :func:`codistill.config.validate` imports the plugin files, so a plugin's
own module must keep its heavy imports inside functions for validation to stay fast.
"""

from __future__ import annotations

import dataclasses
import importlib


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


def check(cond: bool, key: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"<key>: <msg>"`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def choice(value, key: str, choices: tuple) -> None:
    check(value in choices, key, f"{value!r} is not one of {list(choices)}")


def locate(target: str, key: str):
    """The object a ``_target_`` names (``package.module.Name``), or a :class:`ConfigError`
    naming ``key`` that says what could not be imported (the plugin's directory or package must
    be importable: ``PYTHONPATH`` or an installed package)."""
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{key}: {target!r} is not a dotted name 'package.module.Class'")
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{key}: cannot import {module!r} ({e}); is the plugin's directory on PYTHONPATH?") from e
    except AttributeError as e:
        raise ConfigError(f"{key}: module {module!r} has no {name!r}") from e
    return obj


def schema_of(target: str, key: str, base: type) -> type:
    """The config dataclass of the plugin ``target``: its ``Config`` attribute, a subclass of
    ``base`` (a plugin with no options of its own may leave it out and get ``base``)."""
    schema = getattr(locate(target, key), "Config", None) or base
    check(dataclasses.is_dataclass(schema) and isinstance(schema, type) and issubclass(schema, base), key,
          f"{target}.Config must be a dataclass extending {base.__module__}.{base.__name__}")
    return schema
