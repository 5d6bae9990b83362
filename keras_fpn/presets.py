"""How `from_preset` reaches the model zoo without the model classes importing it.

The zoo (`keras_fpn.models`) knows the detectors; the detectors do not know the zoo. The zoo registers the one
function that turns a named record into constructor arguments when it is imported, which `import keras_fpn` does,
and `Detector.from_preset` asks this module for them. Imports nothing heavy: the command line reads the zoo
before TensorFlow starts.
"""

_preset_arguments = None


def register(preset_arguments):
    """Registers `preset_arguments(cls, name, num_classes, backbone_weights, **kwargs) -> dict`."""
    global _preset_arguments
    _preset_arguments = preset_arguments


def preset_arguments(cls, name, num_classes=None, backbone_weights="preset", **kwargs):
    """The constructor arguments of `cls` for the preset `name`, from the registered zoo."""
    if _preset_arguments is None:
        raise RuntimeError(f"{cls.__name__}.from_preset({name!r}): no model zoo is registered. `import keras_fpn` "
                           "registers the built-in zoo (keras_fpn.models).")
    return _preset_arguments(cls, name, num_classes=num_classes, backbone_weights=backbone_weights, **kwargs)
