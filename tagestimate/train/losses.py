"""Multi-label losses on the model's sigmoid outputs: binary cross-entropy (NDL's, the default),
asymmetric loss (Ridnik et al., ICCV 2021) and focal loss (Lin et al., 2017).

Each returns one value per image, the mean over labels (as Keras' BinaryCrossentropy does,
so that learning rates carry over between losses); Keras then applies the per-image sample
weights (`--balance`) and averages over the batch. Under mixed precision the outputs may
arrive as float16 or bfloat16: they are cast to float32 first, since (1 - p)^4 and log(p)
of a float16 p underflow.
"""

from tagestimate import quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402  (TensorFlow loaded quietly above)

LOSS_CHOICES = ("bce", "asl", "focal")
EPSILON = 1e-7  # keeps log() finite at p = 0 or 1, as Keras' own cross-entropy does


def _prepare(y_true, y_pred):
    ops = keras.ops
    y_pred = ops.clip(ops.cast(y_pred, "float32"), EPSILON, 1.0 - EPSILON)
    return ops.cast(y_true, "float32"), y_pred


@keras.saving.register_keras_serializable(package="tagestimate")
class AsymmetricLoss(keras.losses.Loss):
    """ASL: positives weigh (1 - p)^gamma_pos; negatives are shifted by `clip` (p_m = max(p - clip, 0),
    so easy negatives below the margin cost nothing) and weigh p_m^gamma_neg."""

    def __init__(self, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, name="asymmetric_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma_neg, self.gamma_pos, self.clip = float(gamma_neg), float(gamma_pos), float(clip)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true, p = _prepare(y_true, y_pred)
        shifted = ops.maximum(p - self.clip, 0.0) if self.clip > 0 else p
        positive = ops.power(1.0 - p, self.gamma_pos) * ops.log(p)
        negative = ops.power(shifted, self.gamma_neg) * ops.log(ops.maximum(1.0 - shifted, EPSILON))
        return -ops.mean(y_true * positive + (1.0 - y_true) * negative, axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma_neg": self.gamma_neg, "gamma_pos": self.gamma_pos,
                "clip": self.clip}


@keras.saving.register_keras_serializable(package="tagestimate")
class FocalLoss(keras.losses.Loss):
    """Focal loss without class balancing (the folder weights do that): each term of the
    cross-entropy weighs (1 - p_t)^gamma, p_t being the probability of the true answer."""

    def __init__(self, gamma=2.0, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true, p = _prepare(y_true, y_pred)
        p_true = y_true * p + (1.0 - y_true) * (1.0 - p)
        return -ops.mean(ops.power(1.0 - p_true, self.gamma) * ops.log(p_true), axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


def make_loss(name, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, focal_gamma=2.0):
    """The Keras loss for --loss `name` (one of LOSS_CHOICES) with its parameters."""
    if name == "bce":
        return keras.losses.BinaryCrossentropy()  # NDL's loss, unchanged
    if name == "asl":
        return AsymmetricLoss(gamma_neg, gamma_pos, clip)
    if name == "focal":
        return FocalLoss(focal_gamma)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_CHOICES)}")
