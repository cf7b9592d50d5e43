"""The lane toolkit: several seeds of one run trained as one batched computation, exactly.

A suite usually trains the same agent on the same environment with 5, 10 or 30 seeds. For a
small network each of those runs spends most of its time in framework overhead, not in
arithmetic, so stacking the seeds' networks and running them as batched matrix products
(``[lanes, batch, features]``) does the work of many runs for little more than the cost of
one. A :class:`~rlbench.LaneAgent` does this; the harness groups runs that differ only in
their seed and hands them to one agent as lanes (``rlbench run --lanes``).

**The contract.** Lane ``k`` computes exactly what a one-lane run of seed ``k`` computes: its
own initial weights (drawn from seed ``k``'s torch stream), its own environments, replay,
exploration and random stream (``context.lane_rngs[k]``). Every piece here keeps the lanes
apart: batched products compute each lane on its own, reductions run along a lane's own
rows, and the optimizers, the clipper and the target updates hand each lane's parameters to
their kernels as a tensor of its own. So on the CPUs we tested lane ``k`` of a group equals
the separate run of seed ``k`` bit for bit, and grouping runs changes nothing but their
speed (``tests/test_lanes.py`` holds the built-in agents to that).

The pieces, each in a module named for what it holds:

- :mod:`~rlbench.lanes.networks`: :func:`stack_networks` (``lanes`` modules of one
  architecture as one module ``[lanes, batch, in] -> [lanes, batch, out]``), and a
  :class:`StackedNetwork`'s :meth:`~StackedNetwork.forward_for_backprop` /
  :meth:`~StackedNetwork.backprop` pair for agents that compute their loss's gradient with
  respect to a network's output by hand (by hand through an MLP, autograd otherwise);
  :func:`lane_slice` cuts one lane out of a stacked state.
- :mod:`~rlbench.lanes.optim`: :class:`LaneParameters` (the parameters an optimizer steps,
  moved into one ``[lanes, size]`` buffer, with their gradients), :class:`LaneOptimizer`
  (Adam and RMSprop, each lane stepped as ``torch.optim`` steps it alone) and
  :func:`lane_clip_grad_norm` (``clip_grad_norm_`` per lane).
- :mod:`~rlbench.lanes.targets`: :func:`hard_update` and :func:`polyak_update` of target
  networks.
- :mod:`~rlbench.lanes.replay`: :class:`LaneReplayBuffer`, one replay buffer per lane,
  sampled with each lane's own generator.
- :mod:`~rlbench.lanes.kernels`: the only module that calls PyTorch's private kernels, each
  with a public fallback.

``docs/writing-plugins.md`` ("Lane agents") builds an agent from these pieces.
"""

from __future__ import annotations

from rlbench.lanes.networks import (
    StackedNetwork,
    StackedSequential,
    VmappedNetwork,
    lane_slice,
    stack_networks,
)
from rlbench.lanes.optim import (
    LaneOptimizer,
    LaneParameters,
    OptimizerName,
    lane_clip_grad_norm,
)
from rlbench.lanes.replay import LaneReplayBuffer, ReplaySample, action_layout
from rlbench.lanes.spaces import flat_size
from rlbench.lanes.targets import hard_update, polyak_update

__all__ = [
    "LaneOptimizer",
    "LaneParameters",
    "LaneReplayBuffer",
    "OptimizerName",
    "ReplaySample",
    "StackedNetwork",
    "StackedSequential",
    "VmappedNetwork",
    "action_layout",
    "flat_size",
    "hard_update",
    "lane_clip_grad_norm",
    "lane_slice",
    "polyak_update",
    "stack_networks",
]
