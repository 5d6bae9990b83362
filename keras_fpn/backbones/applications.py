"""Looking up `keras.applications` constructors by name."""

import inspect

import keras


def application_names():
    """The names of every model constructor in `keras.applications`, e.g. `["ConvNeXtBase", ...]`."""
    return sorted(
        name
        for name, value in vars(keras.applications).items()
        if name[:1].isupper() and inspect.isfunction(value)
    )


def get_application(name):
    """Returns `(constructor, family)` for a `keras.applications` model name such as `"ResNet50"`.

    `family` is the `keras.applications` module holding the constructor's `preprocess_input` (`"resnet"`).

    Raises:
        ValueError: naming the received value and the available names, if `name` is not a constructor.
    """
    constructor = getattr(keras.applications, name, None) if isinstance(name, str) else None
    if constructor is None or not inspect.isfunction(constructor):
        raise ValueError(
            f"Received backbone={name!r}; expected a keras.Model or the name of a keras.applications "
            f"constructor: {', '.join(application_names())}."
        )
    family = constructor.__module__.rsplit(".", 1)[-1]
    return constructor, family
