"""The small MLP the in-loop benchmarks train (one definition for every benchmark)."""
from __future__ import annotations

from typing import Callable, Tuple

import torch


def mlp_trainer(width: int, batch: int, depth: int, device: str = "cpu"
                ) -> Tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """(model, step): ``step()`` runs one SGD step on a fixed batch and returns the detached loss."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU())
                                  for _ in range(depth)], torch.nn.Linear(width, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    xb, yb = torch.randn(batch, width, device=device), torch.randint(0, 10, (batch,), device=device)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step
