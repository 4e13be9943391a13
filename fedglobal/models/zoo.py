"""Built-in models: logistic, mlp and cnn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedglobal.errors import ModelError
from fedglobal.models import register

if TYPE_CHECKING:
    import keras

    from fedglobal.config import ModelConfig
    from fedglobal.data import Schema


def _inputs(schema: Schema) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    import keras

    inputs = keras.Input(shape=(schema.input_dim,), name="features")
    x = keras.layers.Normalization(mean=schema.mean, variance=schema.variance, name="normalize")(
        inputs
    )
    return inputs, x


def _head(x: keras.KerasTensor, schema: Schema) -> keras.KerasTensor:
    import keras

    if schema.task == "classification":
        return keras.layers.Dense(schema.num_classes, activation="softmax", name="output")(x)
    y = keras.layers.Dense(1, name="output")(x)
    return keras.layers.Normalization(
        mean=schema.target_mean, variance=schema.target_variance, invert=True, name="denormalize"
    )(y)


@register("logistic")
def logistic(config: ModelConfig, schema: Schema) -> keras.Model:
    """Multinomial logistic regression (linear regression for a regression task)."""
    import keras

    inputs, x = _inputs(schema)
    return keras.Model(inputs, _head(x, schema), name="logistic")


@register("mlp")
def mlp(config: ModelConfig, schema: Schema) -> keras.Model:
    """A multilayer perceptron: ``hidden`` dense layers, optional BN and dropout."""
    import keras

    inputs, x = _inputs(schema)
    for i, width in enumerate(config.hidden):
        x = keras.layers.Dense(width, name=f"hidden_{i}")(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(name=f"batch_normalization_{i}")(x)
        x = keras.layers.Activation(config.activation, name=f"activation_{i}")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    return keras.Model(inputs, _head(x, schema), name="mlp")


@register("cnn")
def cnn(config: ModelConfig, schema: Schema) -> keras.Model:
    """A small convolutional net for 28x28 grey images (e.g. Fashion-MNIST)."""
    import keras

    if schema.input_dim != 28 * 28:
        raise ModelError(
            f"model 'cnn' needs 784 input features (28x28 images); the data has {schema.input_dim}"
        )
    inputs, x = _inputs(schema)
    x = keras.layers.Reshape((28, 28, 1), name="image")(x)
    for i, filters in enumerate(config.filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv_{i}")(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(name=f"batch_normalization_{i}")(x)
        x = keras.layers.Activation(config.activation, name=f"activation_{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, width in enumerate(config.hidden):
        x = keras.layers.Dense(width, activation=config.activation, name=f"hidden_{i}")(x)
    return keras.Model(inputs, _head(x, schema), name="cnn")
