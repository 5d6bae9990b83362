"""Balanced sampling of positive and negative examples (the RPN's 256 at half positive, the RoI heads' 512 at a
quarter)."""

import keras
import numpy as np

from keras_fpn.detection.sampling import sample_balanced


def test_sampling_fractions():
    seed = keras.random.SeedGenerator(0)
    positive = np.zeros((3, 1000), bool)
    positive[0, :500] = True  # plenty: capped at 128 of 256
    positive[1, :10] = True  # few: all 10, negatives fill to 256
    negative = ~positive
    negative[2] = False
    negative[2, :20] = True  # image 2: no positives, 20 negatives only
    sampled_positive, sampled_negative = (np.asarray(t) for t in sample_balanced(positive, negative, 256, 0.5, seed))
    np.testing.assert_array_equal(sampled_positive.sum(1), [128, 10, 0])
    np.testing.assert_array_equal(sampled_negative.sum(1), [128, 246, 20])
    assert not (sampled_positive & ~positive).any() and not (sampled_negative & ~negative).any()
    # RoI heads: 512 with 25% positive
    positive = np.zeros((1, 3000), bool)
    positive[0, ::3] = True
    sampled_positive, sampled_negative = (np.asarray(t) for t in sample_balanced(positive, ~positive, 512, 0.25, seed))
    assert sampled_positive.sum() == 128 and sampled_negative.sum() == 384
    # Random, not the first ones: over many draws every positive gets picked.
    picks = sum(np.asarray(sample_balanced(positive, ~positive, 512, 0.25, seed)[0]) for _ in range(20))
    assert (picks[positive] > 0).mean() > 0.9
