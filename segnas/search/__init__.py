"""Search strategies. The differentiable engine is shared by FasterSeg, SSR and GAS."""
