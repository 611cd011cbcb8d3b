"""Action heads: the one_hot mode over a bounded Box and the Gaussian's init_log_std offset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from corporation.envs.spaces import UnsupportedSpace, action_head


def test_one_hot_head_drives_a_box_with_its_axis_actions():
    box = spaces.Box(low=np.array([0.0, -1.0, 0.0]), high=np.array([1.0, 2.0, 3.0]), dtype=np.float32)
    head = action_head(box, "one_hot")
    assert head.size == 3 + 1  # logits for the 3 axes and a value
    logits = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 9.0]])
    env = head.to_env(head.greedy(logits))
    np.testing.assert_array_equal(env, [[0.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    assert env.dtype == np.float32 and box.contains(env[0]) and box.contains(env[1])
    action, logp, entropy = head.sample(logits.requires_grad_(), torch.Generator().manual_seed(0))
    assert action.shape == (2,) and logp.requires_grad and entropy.shape == (2,)


def test_one_hot_needs_finite_bounds_and_a_box():
    with pytest.raises(UnsupportedSpace, match="infinite bounds"):
        action_head(spaces.Box(low=-np.inf, high=np.inf, shape=(2,)), "one_hot")
    with pytest.raises(UnsupportedSpace, match="cannot be driven"):
        action_head(spaces.Discrete(3), "one_hot")


def test_init_log_std_offsets_the_gaussian_spread():
    box = spaces.Box(low=-1.0, high=1.0, shape=(2,))
    params = torch.zeros(4096, 4)  # mean 0, raw log_std 0
    gen = torch.Generator().manual_seed(0)
    wide = action_head(box, "policy").sample(params, gen)
    narrow = action_head(box, "policy", init_log_std=-2.0).sample(params, torch.Generator().manual_seed(0))
    # floats, not 0-d tensors: pytest >= 9.2's approx refuses tensors
    assert float(narrow[0].std()) == pytest.approx(float(wide[0].std()) * np.exp(-2.0), rel=1e-5)  # same noise
    assert float(narrow[2][0]) == pytest.approx(float(wide[2][0]) - 2 * 2.0)  # entropy: log_std over 2 dims
