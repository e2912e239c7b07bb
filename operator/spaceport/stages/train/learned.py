"""What training learns beside the splats from the photos (vignetting, directional light, per-photo colour): one
tensor each, trained by its own Adam and saved in the checkpoint under the name the class gives it."""

from __future__ import annotations

from typing import Any

import torch


class LearnedTerm:
    """One parameter (the attribute named ``STATE_KEY``) and its Adam: stepping and checkpointing them."""

    STATE_KEY: str
    """The parameter's attribute name, and its key in the checkpoint (kept, so that older checkpoints resume)."""

    def _learn(self, initial: torch.Tensor, lr: float) -> torch.nn.Parameter:
        """Make ``initial`` the learned parameter with its own Adam; returns it."""
        param = torch.nn.Parameter(initial)
        setattr(self, self.STATE_KEY, param)
        self.optimizer = torch.optim.Adam([param], lr=lr, eps=1e-15)
        return param

    def _param(self) -> torch.nn.Parameter:
        return getattr(self, self.STATE_KEY)

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {self.STATE_KEY: self._param().detach().cpu(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        param = self._param()
        with torch.no_grad():
            param.copy_(state[self.STATE_KEY].to(param.device))
        self.optimizer.load_state_dict(state["optimizer"])
