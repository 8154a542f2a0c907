"""Run a function on a module right after it is first imported, without importing it early.

The realtime instance's local settings (`airflow_adapter.local_settings`) adjust a
few Airflow modules that only some processes load (the api-server's). Importing them from
the local settings would load the api-server's code into every process, and some cannot be
imported that early at all (the settings are still being initialised). `after_import` puts a
finder on `sys.meta_path` that finds nothing itself: when the named module is imported it
lets the regular finders find it and calls the function on the module right after the
module's code has run, before any other module can take names from it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

Callback = Callable[[ModuleType], object]


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, callback: Callback) -> None:
        self.name = name
        self.callback = callback

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run = loader.exec_module
        callback = self.callback

        def exec_module(module: ModuleType) -> None:
            run(module)
            callback(module)

        vars(loader)["exec_module"] = exec_module  # this loader instance only
        return spec


def after_import(name: str, callback: Callback) -> None:
    """Call `callback(module)` now if `name` is loaded, else right after it is first imported.
    A second registration for the same name and callback is ignored."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    for finder in sys.meta_path:
        if isinstance(finder, _AfterImport) and finder.name == name and finder.callback is callback:
            return
    sys.meta_path.insert(0, _AfterImport(name, callback))


def wrap_when_imported(name: str, wrap: Callable[[ModuleType], bool]) -> bool:
    """The adjustments' install step: `wrap(module)` now if `name` is loaded (its result),
    else as soon as it is first imported (True: registered)."""
    module = sys.modules.get(name)
    if module is not None:
        return wrap(module)
    after_import(name, wrap)
    return True
