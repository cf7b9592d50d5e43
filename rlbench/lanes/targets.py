"""Target networks, per lane: a hard copy (DQN) and Polyak averaging (SAC, TD3, DDPG).

A target network's parameters are a :class:`~rlbench.lanes.LaneParameters` of their own
(``grad=False``), laid out as the online network's: the same parameters in the same order.
An update then works on each lane's row, one tensor per lane, so a lane's target is what a
one-lane run computes, whatever its group (see :mod:`rlbench.lanes.kernels`)::

    self.critic_params = LaneParameters(self.critic.parameters())
    self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
    self.target_params = LaneParameters(self.critic_target.parameters(), grad=False)
    ...
    polyak_update(self.target_params, self.critic_params, tau=0.005)
"""

from __future__ import annotations

import torch

from rlbench.lanes import kernels
from rlbench.lanes.optim import LaneParameters


def _check_layout(target: LaneParameters, online: LaneParameters) -> None:
    if target.flat.shape != online.flat.shape or target.sizes != online.sizes:
        raise ValueError(
            "target and online LaneParameters differ in layout: build both from the same "
            f"architecture, parameters in the same order ({target.sizes} vs {online.sizes})"
        )


@torch.no_grad()
def hard_update(target: LaneParameters, online: LaneParameters) -> None:
    """Copy every lane's online parameters into its target (``load_state_dict`` of the
    parameters, as one copy)."""
    _check_layout(target, online)
    target.flat.copy_(online.flat)


@torch.no_grad()
def polyak_update(target: LaneParameters, online: LaneParameters, tau: float) -> None:
    """``target = (1 - tau) * target + tau * online``, lane by lane, with the operations of
    Stable-Baselines3's ``polyak_update`` (a multiplication by ``1 - tau``, then an addition of
    ``tau * online``)."""
    _check_layout(target, online)
    kernels.foreach_polyak_(target.rows, online.rows, tau)
