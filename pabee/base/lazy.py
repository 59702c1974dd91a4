"""A subpackage's entry points named on the subpackage itself and imported on first use (PEP 562): `from
pabee.deploy import Predictor` loads torch then, not when a script that only parses its flags imports
the package."""

import importlib


def lazy_exports(package, homes):
    """The module `__getattr__` of `package` that answers each name of `homes` (name -> its module in
    the package) from that module, imported when the name is first asked for."""

    def __getattr__(name):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
