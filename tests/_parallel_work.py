"""Small deterministic work functions for tests/test_parallel.py, importable by spawned workers."""

import torch


def conv_score(seed: int) -> dict:
    """A float from a tiny conv forward pass, seeded by the item."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        return {"seed": seed, "score": float(conv(x).sum()), "threads": torch.get_num_threads()}


def fail_on_three(seed: int) -> dict:
    """`conv_score`, except that item 3 raises."""
    if seed == 3:
        raise ValueError("boom on 3")
    return conv_score(seed)

