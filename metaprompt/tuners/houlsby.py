"""The Houlsby adapter modules (see ``adapter.py`` for where they go and why they are hand-written)."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "swish": nn.SiLU}


class BottleneckAdapter(nn.Module):
    """``h + up(f(down(h)))``: a residual bottleneck MLP."""

    def __init__(self, hidden: int, size: int, activation: str, init_std: float, generator: torch.Generator):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, hidden)
        with torch.no_grad():
            nn.init.trunc_normal_(self.down.weight, std=init_std, a=-2 * init_std, b=2 * init_std,
                                  generator=generator)
            self.down.bias.zero_()
            self.up.weight.zero_()  # exact identity at init (see adapter.py)
            self.up.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class AdaptedLinear(nn.Linear):
    """A linear layer followed by an adapter; shares (does not copy) the original weight and bias."""

    def __init__(self, base: nn.Linear, adapter: BottleneckAdapter):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(super().forward(x))
