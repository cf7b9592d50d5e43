"""Stacked networks: ``lanes`` networks of one architecture as one batched module.

A suite usually trains the same agent on the same environment with 5, 10 or 30 seeds. For a
small network each of those runs spends most of its time in framework overhead, not in
arithmetic, so stacking the seeds' networks and running them as batched matrix products
(``[lanes, batch, features]``) does the work of many runs for little more than the cost of
one. A :class:`~rlbench.agent.LaneAgent` does this; the harness groups runs that differ only
in their seed and hands them to one agent as lanes (``rlbench run --lanes``).

Lane ``k`` must compute exactly what a one-lane run of seed ``k`` computes: its own initial
weights (drawn from seed ``k``'s torch stream), its own environments, replay, exploration and
random stream. The batched operations used here (``torch.baddbmm``, row-wise reductions,
element-wise optimizers) compute each lane independently of the others, so on the CPUs we
tested lane ``k`` of a group equals the separate run of seed ``k`` bit for bit, and grouping
runs changes nothing but their speed (``tests/test_lanes.py`` holds it to that).

This module stacks the networks: :func:`stack_networks` turns ``lanes`` modules of the same
architecture into one module mapping ``[lanes, batch, in]`` to ``[lanes, batch, out]``, and
a :class:`StackedNetwork`'s :meth:`~StackedNetwork.forward_for_backprop` /
:meth:`~StackedNetwork.backprop` pair backpropagates a gradient an agent computed itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rlbench.lanes import kernels

#: A linear layer with fewer outputs than this (a Q-network's head) is computed as
#: ``(weight @ x^T)^T`` with ``weight`` ``[lanes, out, in]``: a batched product with a handful
#: of output columns runs several times slower than the same product transposed (256 -> 2
#: for 16 lanes of 64 rows: 340 µs against 50 µs, backward pass included 930 µs against
#: 540 µs). The choice depends on the layer's shape only, never on the number of lanes, so a
#: lane computes the same whatever group it is in.
NARROW_OUTPUT = 32

#: Layers the fast path stacks: linear layers, and element-wise activations (applied to the
#: stacked activations as they are, since they treat every element alike).
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.ELU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Sigmoid, nn.Identity)


# Zero-dimensional constants: an operation with a Python number wraps it into a tensor and
# converts it on every call (about 1.5 µs each, more than a small operation's own work).
_TWO = torch.tensor(2.0)
_MINUS_ONE = torch.tensor(-1.0)


def _tanh_in_place(x: torch.Tensor) -> torch.Tensor:
    # tanh(x) = 2 * sigmoid(2x) - 1, in three passes. Torch's CPU tanh costs 4-5 times its
    # sigmoid per element (1 x 256 x 64 floats, one thread: 44 µs against 11 µs for these
    # three passes); the result differs from torch.tanh's by at most 2e-7.
    x.mul_(_TWO).sigmoid_()
    return torch.add(_MINUS_ONE, x, alpha=2.0, out=x)


class _TanhInPlace(torch.autograd.Function):
    """:func:`_tanh_in_place` under autograd: the gradient is ``grad * (1 - tanh(x)^2)``,
    from the output, as torch's own tanh computes it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(x)
        y = _tanh_in_place(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return kernels.tanh_backward(grad, y)


#: From this many input elements per lane on, a narrow layer's training pass goes through
#: _NarrowProduct; below, the gain is smaller than a Python autograd function's overhead.
NARROW_PRODUCT_FROM = 8192


class _NarrowProduct(torch.autograd.Function):
    """``x @ weight^T`` for a narrow layer (``weight`` ``[lanes, out, in]``) of several rows,
    computed as ``(weight @ x^T)^T``. Autograd's gradient of that form for ``x`` is a
    transposed view, and the activation's backward pass before the layer, given one
    operand transposed and the other not, runs element by element (1 x 256 x 64 floats:
    13 µs against 4 µs; 16 lanes: 181 µs against 39 µs). This one computes it as
    ``grad @ weight``, laid out like ``x``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.bmm(weight, x.transpose(1, 2)).transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight


#: Under autograd, from this many elements per lane on, tanh_ computes in place (three
#: passes and a Python autograd function, about 30 µs of overhead for a forward and backward
#: pass); below it, torch.tanh (one slower pass, no Python). Measured forward and backward
#: passes of one tanh, one thread: 1 lane x 64 rows x 64: 52 µs in place against 19 µs; 1 x
#: 256 x 64: 52 against 50; 16 x 256 x 64: 290 against 1012. A per-lane threshold keeps
#: which one computes a lane independent of the number of lanes.
TANH_IN_PLACE_FROM = 8192


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """``tanh`` of ``x`` ``[lanes, ...]``, overwriting ``x`` (a fresh product nothing else
    holds) with :func:`_tanh_in_place`; under autograd, ``torch.tanh(x)`` below
    ``TANH_IN_PLACE_FROM`` elements per lane. (Without autograd, in place at every size:
    its three passes cost at most 2 µs more than torch.tanh on a few rows, and save 5 µs
    on 1 x 64 x 64, 13 µs on 16 x 8 x 64.)"""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _tanh_in_place(x)
    if x.numel() < TANH_IN_PLACE_FROM * x.shape[0]:
        return torch.tanh(x)
    return _TanhInPlace.apply(x)


#: Activations applied in place to the product before them (see StackedSequential).
IN_PLACE: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu_,
    nn.Tanh: tanh_,
}


class StackedNetwork(nn.Module):
    """Base of a stack of ``lanes`` networks; ``lane_state_dict(k)`` is lane ``k``'s weights
    under the keys of the original module's own ``state_dict``.

    :meth:`forward_for_backprop` and :meth:`backprop` are a forward and backward pass for an
    agent that computes the gradient of its loss with respect to the network's output itself
    (the policy-gradient agents): here through autograd, in :class:`StackedSequential` by
    hand (no autograd graph: per-operation overhead is most of a small network's time)."""

    lanes: int

    def lane_state_dict(self, lane: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward_for_backprop(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``(output, saved)``: the output (not part of any autograd graph) and what
        :meth:`backprop` or :meth:`backprop_to_input` needs of this pass (one of them,
        once)."""
        x = x.detach().requires_grad_()
        with torch.enable_grad():
            out = self(x)
        return out.detach(), (x, out)

    def backprop(
        self, saved: Any, grad_output: torch.Tensor, grads: Sequence[torch.Tensor]
    ) -> None:
        """Write into ``grads`` (one tensor per ``self.parameters()``, in order, of its
        shape) the gradient of ``(output * grad_output).sum()``, each lane's with respect
        to its own weights: backpropagation of ``grad_output``, the gradient of the loss
        with respect to the output of the pass that returned ``saved``."""
        computed = torch.autograd.grad(saved[1], list(self.parameters()), grad_output)
        kernels.foreach_copy_(grads, computed)

    def backprop_to_input(self, saved: Any, grad_output: torch.Tensor) -> torch.Tensor:
        """The gradient of ``(output * grad_output).sum()`` with respect to the pass's input
        ``x`` (``[lanes, batch, in]``), and no parameter's: a loss that reaches another
        network through this one (an actor's loss through a critic)."""
        x, out = saved
        return torch.autograd.grad(out, x, grad_output)[0]


class StackedSequential(StackedNetwork):
    """``nn.Sequential`` stacks of linear layers and element-wise activations, as batched
    matrix products: a linear layer is ``baddbmm(bias, x, weight)`` with ``weight`` stored
    ``[lanes, in, out]`` (each lane's ``nn.Linear`` weight transposed: products with it, and
    their backward pass, run about 15% faster than through a transposed view); a layer with
    fewer than ``NARROW_OUTPUT`` outputs is ``(weight @ x^T)^T + bias`` with ``weight``
    ``[lanes, out, in]``."""

    def __init__(self, networks: Sequence[nn.Sequential]) -> None:
        super().__init__()
        self.lanes = len(networks)
        first = networks[0]
        self.names: list[str] = []
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.bias_of: list[int | None] = []  # each linear layer's index in biases, if any
        self.narrow: list[bool] = []  # each linear layer: weight [lanes, out, in]?
        self.steps: list[nn.Module | int] = []  # an activation, or the index of a linear layer
        for index, layer in enumerate(first):
            if isinstance(layer, nn.Linear):
                column = [net[index] for net in networks]
                narrow = layer.out_features < NARROW_OUTPUT
                self.narrow.append(narrow)
                self.weights.append(
                    nn.Parameter(
                        torch.stack(
                            [m.weight.detach() if narrow else m.weight.detach().t() for m in column]
                        ).contiguous()
                    )
                )
                if layer.bias is not None:
                    self.biases.append(
                        nn.Parameter(torch.stack([m.bias.detach() for m in column]).unsqueeze(1))
                    )
                    self.bias_of.append(len(self.biases) - 1)
                else:
                    self.bias_of.append(None)
                self.names.append(str(index))
                self.steps.append(len(self.weights) - 1)
            else:
                self.steps.append(copy.deepcopy(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for weight, bias, activation, narrow in self._layers:
            x = self._linear(x, weight, bias, narrow)
            if activation is not None:
                x = activation(x)
        return x

    @staticmethod
    def _linear(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, narrow: bool
    ) -> torch.Tensor:
        if not narrow:
            return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias, x, weight)
        if weight.shape[1] == 1:
            # One output (a value head): a per-lane dot product. As a matrix product its
            # backward pass is a one-row product, which the BLAS computes with a kernel that
            # differs between one matrix and a batch of them.
            x = (x * weight).sum(dim=2, keepdim=True)
        elif x.shape[1] == 1:
            # One row per lane (acting in one environment, naive DQN's batch of 1): W @ x^T
            # would be a one-column product, again a kernel that differs between one lane
            # and several; x @ W^T (a view) is not.
            x = torch.bmm(x, weight.transpose(1, 2))
        elif (
            x.shape[1] * x.shape[2] >= NARROW_PRODUCT_FROM
            and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad)
        ):
            x = _NarrowProduct.apply(x, weight)
        else:
            x = torch.bmm(weight, x.transpose(1, 2)).transpose(1, 2)
        return x if bias is None else x + bias

    def forward_for_backprop(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The forward pass of :meth:`forward` (the same operations), keeping each layer's
        input and each activation's output for :meth:`backprop`."""
        if not self._backprop_by_hand:
            return super().forward_for_backprop(x)
        inputs, outputs = [], []
        with torch.no_grad():
            for weight, bias, activation, narrow in self._layers:
                inputs.append(x)
                x = self._linear(x, weight, bias, narrow)
                if activation is not None:
                    x = activation(x)
                outputs.append(x)
        return x, (inputs, outputs)

    def backprop(
        self, saved: Any, grad_output: torch.Tensor, grads: Sequence[torch.Tensor]
    ) -> None:
        """Backpropagation by hand: the formulas autograd applies to :meth:`forward`'s
        operations, layer by layer from the output, each activation's gradient computed in
        place on the fresh gradient of its output."""
        if not self._backprop_by_hand:
            super().backprop(saved, grad_output, grads)
            return
        inputs, outputs = saved
        weight_grads = list(grads[: len(self.weights)])
        bias_grads = list(grads[len(self.weights) :])
        g = grad_output
        with torch.no_grad():
            for i in reversed(range(len(self._layers))):
                weight, bias, activation, narrow = self._layers[i]
                x = inputs[i]
                g = self._activation_grad(g, outputs[i], activation, g is not grad_output)
                # Each gradient is computed straight into its place (out=): a view of the
                # agent's gradient buffer (rlbench.lanes.LaneParameters.grad), never a copy.
                if bias is not None:
                    torch.sum(g, dim=1, keepdim=True, out=bias_grads[self.bias_of[i]])  # type: ignore[index]
                self._weight_grad(x, g, weight, narrow, weight_grads[i])
                if i > 0:
                    g = self._input_grad(g, weight, narrow)

    def backprop_to_input(self, saved: Any, grad_output: torch.Tensor) -> torch.Tensor:
        """:meth:`StackedNetwork.backprop_to_input` by hand: the input gradient of every layer
        down to the first's, no weight's, with autograd's formulas (so equal to autograd's
        bit for bit)."""
        if not self._backprop_by_hand:
            return super().backprop_to_input(saved, grad_output)
        _, outputs = saved
        g = grad_output
        with torch.no_grad():
            for i in reversed(range(len(self._layers))):
                weight, _, activation, narrow = self._layers[i]
                g = self._activation_grad(g, outputs[i], activation, g is not grad_output)
                g = self._input_grad(g, weight, narrow)
        return g

    @staticmethod
    def _activation_grad(
        g: torch.Tensor, y: torch.Tensor, activation: Callable[..., Any] | None, fresh: bool
    ) -> torch.Tensor:
        """``g`` through the activation whose output was ``y`` (none: ``g``); in place when
        ``g`` is ``fresh``, a gradient this pass made, never on the caller's."""
        if activation is tanh_:
            return kernels.tanh_backward(g, y, out=fresh)
        if activation is torch.relu_:
            return kernels.relu_backward(g, y, out=fresh)
        return g

    @staticmethod
    def _weight_grad(
        x: torch.Tensor, g: torch.Tensor, weight: torch.Tensor, narrow: bool, out: torch.Tensor
    ) -> None:
        if not narrow:
            torch.bmm(x.transpose(1, 2), g, out=out)  # weight [lanes, in, out]
        elif weight.shape[1] == 1:
            torch.sum(g * x, dim=1, keepdim=True, out=out)  # the value head's dot product
        else:
            torch.bmm(g.transpose(1, 2), x, out=out)  # weight [lanes, out, in]

    @staticmethod
    def _input_grad(g: torch.Tensor, weight: torch.Tensor, narrow: bool) -> torch.Tensor:
        if not narrow:
            return torch.bmm(g, weight.transpose(1, 2))
        if weight.shape[1] == 1:
            return g * weight
        return torch.bmm(g, weight)

    @property
    def _backprop_by_hand(self) -> bool:
        """Whether :meth:`backprop` knows every activation's gradient (tanh, ReLU, none)."""
        return all(layer[2] in (None, tanh_, torch.relu_) for layer in self._layers)

    @property
    def _layers(
        self,
    ) -> list[tuple[nn.Parameter, nn.Parameter | None, Callable[..., Any] | None, bool]]:
        """(weight, bias, activation after it, narrow) per linear layer, built once: indexing the
        ParameterLists on every call costs more than a small layer's product. The
        Parameter objects outlive ``to()``, ``load_state_dict`` and ``deepcopy``."""
        cached = self.__dict__.get("_layer_cache")
        if cached is None:
            cached = []
            for step in self.steps:
                if isinstance(step, int):
                    b = self.bias_of[step]
                    bias = None if b is None else self.biases[b]
                    cached.append([self.weights[step], bias, None, self.narrow[step]])
                elif cached and cached[-1][2] is None:
                    # The product before it is a fresh tensor nothing else holds, and its
                    # backward pass does not need it: ReLU can overwrite it (saves an
                    # allocation and a pass over memory). Tanh too, faster than torch's
                    # (tanh_).
                    cached[-1][2] = IN_PLACE.get(type(step), step)
                else:
                    cached.append([None, None, step, False])
            cached = [tuple(layer) for layer in cached]
            if any(layer[0] is None for layer in cached):
                raise ValueError("StackedSequential: an activation must follow a linear layer")
            self.__dict__["_layer_cache"] = cached
        return cached

    def lane_state_dict(self, lane: int) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name, weight, b, narrow in zip(
            self.names, self.weights, self.bias_of, self.narrow, strict=True
        ):
            w = weight[lane].detach()
            state[f"{name}.weight"] = w.clone() if narrow else w.t().contiguous()
            if b is not None:
                state[f"{name}.bias"] = self.biases[b][lane, 0].detach().clone()
        return state


class VmappedNetwork(StackedNetwork):
    """Any other architecture: the lanes' parameters stacked with
    ``torch.func.stack_module_state`` and the module applied per lane with ``torch.func.vmap``
    (general, but with more Python per call than :class:`StackedSequential`)."""

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.lanes = len(networks)
        params, buffers = torch.func.stack_module_state(list(networks))
        self.keys = list(params)
        self.stacked = nn.ParameterList(nn.Parameter(params[k].detach()) for k in self.keys)
        self.buffer_keys = list(buffers)
        for i, key in enumerate(self.buffer_keys):
            self.register_buffer(f"buffer_{i}", buffers[key])
        # The architecture without storage: functional_call supplies each lane's tensors.
        self.base = [copy.deepcopy(networks[0]).to("meta")]  # a list: not a submodule

    def _buffers_by_key(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"buffer_{i}") for i, k in enumerate(self.buffer_keys)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base[0]

        def one_lane(params: dict[str, Any], buffers: dict[str, Any], xs: torch.Tensor) -> Any:
            return torch.func.functional_call(base, (params, buffers), (xs,))

        params = dict(zip(self.keys, self.stacked, strict=True))
        return torch.func.vmap(one_lane)(params, self._buffers_by_key(), x)

    def lane_state_dict(self, lane: int) -> dict[str, torch.Tensor]:
        state = {k: p[lane].detach().clone() for k, p in zip(self.keys, self.stacked, strict=True)}
        state.update({k: b[lane].clone() for k, b in self._buffers_by_key().items()})
        return state


def stack_networks(networks: Sequence[nn.Module]) -> StackedNetwork:
    """One module computing ``networks[k]`` on ``x[k]`` for every lane ``k``: input
    ``[lanes, batch, in]``, output ``[lanes, batch, out]``. The networks must share an
    architecture (as a network plugin builds them from one config); their weights are copied.

    ``nn.Sequential`` stacks of ``nn.Linear`` and element-wise activations (the ``mlp``
    plugin's networks) take the batched-matrix-product fast path; anything else goes through
    ``torch.func.vmap``.
    """
    if not networks:
        raise ValueError("stack_networks needs at least one network")
    first = networks[0]
    if isinstance(first, nn.Sequential) and all(
        isinstance(layer, (nn.Linear, *ELEMENTWISE)) for layer in first
    ):
        return StackedSequential(networks)  # type: ignore[arg-type]
    return VmappedNetwork(networks)


def lane_slice(state: Any, lane: int) -> Any:
    """Lane ``lane`` of a stacked state (a :meth:`LaneAgent.lane_state_dict` from its
    :meth:`state_dict`): every tensor with a lane dimension cut to ``[1, ...]`` and copied (so
    that saving it does not save the other lanes' storage), 0-d tensors copied, dicts and
    lists walked, anything else kept."""
    if isinstance(state, torch.Tensor):
        # Compact: a lane's saved file must not depend on the layout of its group's tensors.
        if state.dim() == 0:
            return state.clone()
        return state[lane : lane + 1].clone(memory_format=torch.contiguous_format)
    if isinstance(state, dict):
        return {k: lane_slice(v, lane) for k, v in state.items()}
    if isinstance(state, list):
        return [lane_slice(v, lane) for v in state]
    return state
