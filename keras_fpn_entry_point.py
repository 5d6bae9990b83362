"""The `keras-fpn` command's entry point: the CLI (keras_fpn/cli.py) without the package's start-up cost.

`import keras_fpn` imports the whole public API, TensorFlow included (seconds). `keras-fpn --help`, `keras-fpn
models` and the check of a zoo name need none of it, so this module registers the package without running its
`__init__`, runs the CLI, and the CLI runs the package's `__init__` (`finish_import`) only for the commands that
use TensorFlow. `python -m keras_fpn.cli` works too, importing the package as usual.
"""

import importlib.util
import sys


def _register_package_without_init(name="keras_fpn"):
    """Puts the package in `sys.modules` with its `__path__` set and its `__init__` not run: its submodules then
    import one by one, and `finish_import` runs the `__init__` later."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    package = importlib.util.module_from_spec(spec)
    package.__keras_fpn_deferred_init__ = spec
    sys.modules[name] = package


def finish_import(name="keras_fpn"):
    """Runs the package `__init__` that `main` deferred (nothing when it already ran)."""
    package = sys.modules.get(name)
    spec = getattr(package, "__keras_fpn_deferred_init__", None)
    if spec is not None:
        del package.__keras_fpn_deferred_init__
        spec.loader.exec_module(package)


def main(argv=None):
    _register_package_without_init()
    from keras_fpn import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
