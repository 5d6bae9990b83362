"""Sampling a fixed number of training examples per image with at most a given share of positives (the RPN's
anchors and the RoI heads' proposals in Faster R-CNN)."""

import keras
from keras import ops


def _top_mask(candidates, priority, count, k_max):
    """`candidates [batch, N]` bool: the `count [batch]` candidates of highest `priority` (at most `k_max`)."""
    scores = ops.where(candidates, priority, -1.0)
    batch = ops.shape(scores)[0]
    # Padding so top-k has k_max entries even when N < k_max (small images have few anchors).
    padded = ops.concatenate([scores, -ops.ones((batch, k_max), scores.dtype)], axis=1)
    values, _ = ops.top_k(padded, k=k_max)
    threshold = ops.take_along_axis(values, ops.maximum(count - 1, 0)[:, None], axis=1)
    return candidates & (scores >= threshold) & (count[:, None] > 0)


def sample_balanced(positive, negative, batch_size_per_image, positive_fraction, seed=None):
    """Draws at most `batch_size_per_image` examples per image, uniformly at random, of which at most
    `int(batch_size_per_image * positive_fraction)` positives; negatives fill the rest (torchvision's
    `BalancedPositiveNegativeSampler`, detectron2's `subsample_labels`).

    Args:
        positive, negative: `[batch, N]` bool, disjoint.
        batch_size_per_image: int. positive_fraction: float in (0, 1].
        seed: a `keras.random.SeedGenerator` or None.

    Returns:
        `(sampled_positive, sampled_negative)`, `[batch, N]` bool.
    """
    max_positive = int(batch_size_per_image * positive_fraction)
    num_positive = ops.minimum(ops.sum(ops.cast(positive, "int32"), axis=1), max_positive)
    num_negative = ops.minimum(ops.sum(ops.cast(negative, "int32"), axis=1), batch_size_per_image - num_positive)
    # A random priority per example; the highest ones are taken (ties have probability 0).
    priority = keras.random.uniform(ops.shape(positive), seed=seed)
    sampled_positive = _top_mask(positive, priority, num_positive, max(max_positive, 1))
    sampled_negative = _top_mask(negative, priority, num_negative, batch_size_per_image)
    return sampled_positive, sampled_negative
