"""Looking up backbone constructors by name: every `keras.applications` model, and keras_fpn's own."""

import inspect

import keras

# Backbones keras_fpn adds to keras.applications' names: constructor (module, name) and preprocessing family.
KERAS_FPN_BACKBONES = {
    "TorchvisionResNet50": ("keras_fpn.backbones.torchvision_resnet", "TorchvisionResNet50", "torchvision"),
}


def application_names():
    """The names of every model constructor in `keras.applications`, e.g. `["ConvNeXtBase", ...]`."""
    return sorted(
        [name for name, value in vars(keras.applications).items() if name[:1].isupper() and inspect.isfunction(value)]
        + list(KERAS_FPN_BACKBONES)
    )


def get_application(name):
    """Returns `(constructor, family)` for a `keras.applications` model name such as `"ResNet50"`, or one of
    keras_fpn's own backbones (`KERAS_FPN_BACKBONES`: `"TorchvisionResNet50"`).

    `family` names the preprocessing `ApplicationPreprocessing` applies: the `keras.applications` module holding
    the constructor's `preprocess_input` (`"resnet"`), or `"torchvision"`.

    Raises:
        ValueError: naming the received value and the available names, if `name` is not a constructor.
    """
    if isinstance(name, str) and name in KERAS_FPN_BACKBONES:
        import importlib

        module, constructor, family = KERAS_FPN_BACKBONES[name]
        return getattr(importlib.import_module(module), constructor), family
    constructor = getattr(keras.applications, name, None) if isinstance(name, str) else None
    if constructor is None or not inspect.isfunction(constructor):
        raise ValueError(
            f"Received backbone={name!r}; expected a keras.Model or the name of a keras.applications "
            f"constructor: {', '.join(application_names())}."
        )
    family = constructor.__module__.rsplit(".", 1)[-1]
    return constructor, family
