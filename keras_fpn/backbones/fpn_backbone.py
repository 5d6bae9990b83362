"""`FPNBackbone`: any `keras.applications` model with a Feature Pyramid on top."""

import keras

from keras_fpn.backbones.applications import get_application
from keras_fpn.backbones.stage_outputs import find_stage_outputs
from keras_fpn.utils.batchnorm import freeze_batchnorm as freeze_batchnorm_layers
from keras_fpn.utils.batchnorm import set_batchnorm_momentum
from keras_fpn.layers.application_preprocessing import ApplicationPreprocessing
from keras_fpn.layers.feature_pyramid import FeaturePyramid
from keras_fpn.layers.levels import level_key


def _normalize_stage_layers(stage_layers):
    if stage_layers is None:
        return None
    if not isinstance(stage_layers, dict):
        raise ValueError(
            f"Received stage_layers={stage_layers!r}; expected a dict {{level: layer_name}}, e.g. "
            "{3: 'conv3_block4_out'}."
        )
    normalized = {}
    for level, name in stage_layers.items():
        # A `.keras` config is JSON, whose object keys are strings: accept "3" as well as 3.
        try:
            normalized[int(level)] = str(name)
        except (TypeError, ValueError):
            raise ValueError(f"Received stage_layers key {level!r}; expected an integer level such as 3.") from None
    return dict(sorted(normalized.items()))


@keras.saving.register_keras_serializable(package="keras_fpn")
class FPNBackbone(keras.Model):
    """A `keras.applications` backbone with a `FeaturePyramid`: raw images in, pyramid maps out.

    The bottom-up pathway of FPN (Lin et al. 2017, https://arxiv.org/abs/1612.03144) is the backbone's stage
    outputs `C{l}`, the last layer at each stride `2^l`. They are found by measuring every layer's output stride
    (`keras_fpn.backbones.find_stage_outputs`), not by layer names, so every model in `keras.applications` works:
    ResNet, ResNetV2, VGG, DenseNet, Inception, Xception, MobileNet V1-V3, NASNet, EfficientNet V1/V2, ConvNeXt.
    `stage_layers` overrides the choice for unusual models.

    The family's own `preprocess_input` runs inside the model, so callers pass raw RGB images in [0, 255].

    Args:
        backbone: str or `keras.Model`, default `"ResNet50"`. A `keras.applications` constructor name (built
            with `include_top=False`) or a functional model taking images.
        weights: `"imagenet"` (default; downloads when online), None (random), or the path of a local weights
            file. Used only when `backbone` is a name.
        input_shape: tuple or None (default). Image shape `(height, width, channels)`; height and width may be None
            except for models that only run at one size (NASNet), which need them fixed. None means
            `(None, None, 3)` for a name, and the model's own input shape for a model instance.
        min_level: int, default 3. Finest pyramid level.
        max_level: int, default 7. Coarsest pyramid level; levels above the backbone's are extra levels.
        num_channels: int, default 256. Channels of every pyramid map.
        pyramid_kwargs: dict or None. Further `FeaturePyramid` arguments (`fusion`, `upsampling`,
            `extra_levels_from`, `norm`, `top_down`, `lateral`, initializers).
        stage_layers: dict `{level: layer_name}` or None. Explicit stage outputs, overriding measured ones for
            the levels given.
        preprocessing: str or None, default `"auto"`. The `keras.applications` family whose `preprocess_input`
            to apply (`"resnet"`, `"mobilenet_v3"`, ...); `"auto"` takes it from `backbone` when it is a name and
            applies none for a model instance; None applies none.
        return_features: bool, default False. True returns the backbone maps `{"C{l}"}` instead of the pyramid.
        backbone_kwargs: dict or None. Further arguments of the `keras.applications` constructor (e.g. `alpha`
            for MobileNet).
        batchnorm_momentum: float or None. Sets the momentum of every backbone BatchNorm; keras.applications use
            0.99-0.999, too slow for short from-scratch schedules (0.9 follows the weights within tens of steps).
        freeze_batchnorm: bool, default False. Freezes the backbone's BatchNorm layers (statistics and affine
            weights, inference mode in training too), for fine-tuning pretrained weights.
        **kwargs: base `keras.Model` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        images: tensor `[batch, height, width, 3]`, RGB in [0, 255].

    Returns:
        A dict `{"P{l}": [batch, h_l, w_l, num_channels]}` for `min_level..max_level`, or with
        `return_features=True`, `{"C{l}": [batch, h_l, w_l, channels_l]}` for the backbone levels used.

    Example:

    >>> model = FPNBackbone("MobileNetV3Small", weights=None, num_channels=64)
    >>> pyramid = model(keras.ops.zeros((1, 96, 128, 3)))
    >>> {key: tuple(value.shape) for key, value in pyramid.items()}
    {'P3': (1, 12, 16, 64), 'P4': (1, 6, 8, 64), 'P5': (1, 3, 4, 64), 'P6': (1, 2, 2, 64), 'P7': (1, 1, 1, 64)}
    """

    def __init__(
        self,
        backbone="ResNet50",
        weights="imagenet",
        input_shape=None,
        min_level=3,
        max_level=7,
        num_channels=256,
        pyramid_kwargs=None,
        stage_layers=None,
        preprocessing="auto",
        return_features=False,
        backbone_kwargs=None,
        batchnorm_momentum=None,
        freeze_batchnorm=False,
        **kwargs,
    ):
        if isinstance(backbone, dict):  # a serialized model, from get_config()
            backbone = keras.saving.deserialize_keras_object(backbone)
        if input_shape is None:
            input_shape = tuple(backbone.inputs[0].shape[1:]) if isinstance(backbone, keras.Model) else (None, None, 3)
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                f"Received input_shape={input_shape!r}; expected (height, width, channels), channels last."
            )
        backbone_kwargs = dict(backbone_kwargs or {})
        pyramid_kwargs = dict(pyramid_kwargs or {})
        stage_layers = _normalize_stage_layers(stage_layers)

        if isinstance(backbone, keras.Model):
            application, family = backbone, None
        else:
            constructor, family = get_application(backbone)
            application = constructor(include_top=False, weights=weights, input_shape=input_shape, **backbone_kwargs)
        if batchnorm_momentum is not None:
            set_batchnorm_momentum(application, batchnorm_momentum)
        if freeze_batchnorm:
            freeze_batchnorm_layers(application)
        if preprocessing == "auto":
            preprocessing = family
        if preprocessing is not None:
            ApplicationPreprocessing(preprocessing)  # validates the name before the heavier work below

        operations = {op.name: op for op in application.operations}
        measured = find_stage_outputs(application, min_level=min_level)
        top = min(max(measured), max_level)
        chosen = {level: name for level, name in measured.items() if level <= top}
        fixed = [side for side in application.inputs[0].shape[1:3] if side is not None]
        if fixed and min(fixed) < 2**top:
            wanted = tuple(None if side is None else max(side, 2**top) for side in application.inputs[0].shape[1:3])
            raise ValueError(
                f"{application.name!r} is built for {tuple(application.inputs[0].shape[1:])} images, too small for "
                f"pyramid level {top} (stride {2**top}): every side must be at least {2**top} pixels. Build it with "
                f"input_shape={(*wanted, application.inputs[0].shape[-1])} or larger, or lower max_level."
            )
        for level, name in (stage_layers or {}).items():
            if name not in operations:
                raise ValueError(
                    f"Received stage_layers={{{level}: {name!r}}}, but {application.name!r} has no layer named "
                    f"{name!r}."
                )
            chosen[level] = name
        features = {level_key("C", level): operations[chosen[level]].output for level in sorted(chosen)}
        extractor = keras.Model(application.inputs, features, name=f"{application.name}_features")

        images = keras.Input(shape=input_shape, name="images")
        x = images if preprocessing is None else ApplicationPreprocessing(preprocessing, name="preprocessing")(images)
        backbone_features = extractor(x)
        if return_features:
            outputs = backbone_features
        else:
            pyramid = FeaturePyramid(
                min_level=min_level,
                max_level=max_level,
                num_channels=num_channels,
                name="feature_pyramid",
                **pyramid_kwargs,
            )
            outputs = pyramid(backbone_features)
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        self.backbone = backbone if isinstance(backbone, str) else None
        self._application_config = keras.saving.serialize_keras_object(application)
        self.weights_source = weights
        self.image_shape = input_shape
        self.min_level = min_level
        self.max_level = max_level
        self.num_channels = num_channels
        self.pyramid_kwargs = pyramid_kwargs
        self.stage_layers = dict(chosen)
        self.preprocessing = preprocessing
        self.return_features = return_features
        self.backbone_kwargs = backbone_kwargs
        self.batchnorm_momentum = batchnorm_momentum
        self.freeze_batchnorm = freeze_batchnorm
        self._extractor_name = extractor.name

    def backbone_features(self, images, training=False):
        """Runs the preprocessing and backbone only: returns `{"C{l}": [batch, h_l, w_l, channels_l]}`."""
        x = images
        if self.preprocessing is not None:
            x = self.get_layer("preprocessing")(x)
        return self.get_layer(self._extractor_name)(x, training=training)

    @property
    def pad_value(self):
        """The raw pixel that this backbone's preprocessing maps to 0 (`ApplicationPreprocessing.pad_value`), or
        None: what detectors pad their inputs with."""
        return None if self.preprocessing is None else self.get_layer("preprocessing").pad_value

    @property
    def feature_levels(self):
        """The backbone levels that feed the pyramid, e.g. `[3, 4, 5]`."""
        return sorted(self.stage_layers)

    def get_config(self):
        # The backbone is stored as the built model's config and the measured stage layers by name, so loading
        # neither downloads weights again (the saved file has them) nor measures strides again.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self._application_config,
            "weights": None,
            "input_shape": self.image_shape,
            "min_level": self.min_level,
            "max_level": self.max_level,
            "num_channels": self.num_channels,
            "pyramid_kwargs": self.pyramid_kwargs,
            "stage_layers": self.stage_layers,
            "preprocessing": self.preprocessing,
            "return_features": self.return_features,
            "backbone_kwargs": {},
            "batchnorm_momentum": self.batchnorm_momentum,
            "freeze_batchnorm": self.freeze_batchnorm,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
