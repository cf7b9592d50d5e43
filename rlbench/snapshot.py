"""A copy of an object's mutable training state, and writing it back in place.

:func:`capture` walks an object's attributes (and the lists, tuples and dicts they hold) and
copies what changes during training: tensors, numpy arrays, numpy random generators,
``random.Random`` instances, numbers and strings, and whatever has ``state_dict`` /
``load_state_dict`` (modules, optimizers, running statistics). :func:`restore` writes such a
copy back into an object built the same way, *in place*: a tensor is ``copy_``-ed, an array
filled, a generator given its state. Writing in place keeps every alias valid (a numpy view
of a replay buffer's tensor, an optimizer's per-lane views of its parameters, the generator
that an agent and its buffer share), which pickling the object would silently break.

This is the default checkpoint of an agent (:meth:`rlbench.agent.Agent.checkpoint_state`):
the harness builds the agent afresh from its config, as at the start of a run, and restores
the copy into it. Callables, classes, modules, devices, gymnasium spaces and pydantic models
(configs) are constant for a given config and are not copied; nor are ``torch.Generator``
objects and open files, which an agent that holds them saves itself (by overriding
``checkpoint_state`` and ``load_checkpoint_state``).
"""

from __future__ import annotations

import io
import random
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: Types whose values do not change during training (or cannot be copied), left as built:
#: a resumed agent keeps the generator or open file its ``__init__`` made.
_CONSTANT = (
    io.IOBase,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    type,
    torch.device,
    torch.dtype,
    torch.Generator,
)
_SCALARS = (bool, int, float, complex, str, bytes, type(None))


class SnapshotError(RuntimeError):
    """The state cannot be copied, or a copy does not fit the object it is restored into."""


def _constant(value: Any) -> bool:
    if isinstance(value, _CONSTANT):
        return True
    module = type(value).__module__
    # Spaces (their own generator only serves Space.sample) and configs (pydantic models).
    return module.startswith(("gymnasium.spaces", "gym.spaces", "pydantic")) or hasattr(
        type(value), "model_fields"
    )


def _has_state_dict(value: Any) -> bool:
    return callable(getattr(value, "state_dict", None)) and callable(
        getattr(value, "load_state_dict", None)
    )


def _copy_tree(value: Any) -> Any:
    """``value`` with every tensor cloned and every array copied (a state dict's leaves)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, Mapping):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_tree(v) for v in value)
    return value


def capture(obj: Any) -> dict[str, Any]:
    """The mutable state reachable from ``obj``'s attributes, as plain data that
    ``torch.save`` writes."""
    seen: set[int] = set()
    memory: set[tuple[str, int, int]] = set()

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, _SCALARS):
            return ("value", value)
        if _constant(value):
            return ("constant", None)
        if id(value) in seen:
            # An alias of something copied elsewhere (the generator an agent shares with its
            # buffer): restoring that once restores both.
            return ("alias", None)
        seen.add(id(value))
        if isinstance(value, (torch.Tensor, np.ndarray)):
            # A numpy view of a tensor (or a tensor made from an array) is the same memory:
            # copied once, restored once.
            if isinstance(value, torch.Tensor):
                where_in_memory = (value.device.type, value.data_ptr(), value.nbytes)
            else:
                where_in_memory = ("cpu", value.ctypes.data, value.nbytes)
            if value.nbytes and where_in_memory in memory:
                return ("alias", None)
            memory.add(where_in_memory)
            if isinstance(value, torch.Tensor):
                return ("tensor", value.detach().clone())
            return ("array", value.copy())
        if isinstance(value, np.random.Generator):
            return ("generator", value.bit_generator.state)
        if isinstance(value, random.Random):
            return ("random", value.getstate())
        if isinstance(value, torch.nn.Module):
            # Its parameters, wherever else they are held (a list for gradient clipping),
            # are restored with it.
            for t in (*value.parameters(), *value.buffers()):
                seen.add(id(t))
                memory.add((t.device.type, t.data_ptr(), t.nbytes))
        if isinstance(value, (torch.nn.Module, torch.optim.Optimizer)) or _has_state_dict(value):
            return ("state_dict", _copy_tree(value.state_dict()))
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, [walk(v, f"{where}[{i}]") for i, v in enumerate(value)])
        if isinstance(value, dict):
            return ("dict", {k: walk(v, f"{where}[{k!r}]") for k, v in value.items()})
        attrs = getattr(value, "__dict__", None)
        if attrs is None:
            raise SnapshotError(
                f"{where} is a {type(value).__name__}, which a checkpoint cannot copy; "
                "override checkpoint_state()/load_checkpoint_state() to save it"
            )
        return ("object", {k: walk(v, f"{where}.{k}") for k, v in attrs.items()})

    return {k: walk(v, k) for k, v in vars(obj).items()}


def restore(obj: Any, state: Mapping[str, Any]) -> None:
    """Write ``state`` (from :func:`capture` of an object built the same way) back into
    ``obj``, in place. Raises :class:`SnapshotError` where the two do not fit."""

    def put(holder: Any, key: Any, current: Any, saved: tuple[str, Any], where: str) -> None:
        kind, data = saved
        if kind in ("constant", "alias"):
            return
        if kind == "value":
            if not (type(current) is type(data) and current == data):
                set_(holder, key, data)
        elif kind == "tensor":
            if isinstance(current, torch.Tensor) and current.shape == data.shape:
                with torch.no_grad():
                    current.copy_(data)
            else:  # e.g. a tensor the fresh object has not made yet
                device = current.device if isinstance(current, torch.Tensor) else None
                set_(holder, key, data if device is None else data.to(device))
        elif kind == "array":
            if isinstance(current, np.ndarray) and current.shape == data.shape:
                current[...] = data
            else:
                set_(holder, key, data)
        elif kind == "generator":
            _expect(current, np.random.Generator, where).bit_generator.state = data
        elif kind == "random":
            _expect(current, random.Random, where).setstate(data)
        elif kind == "state_dict":
            current.load_state_dict(data)
        elif kind in ("list", "tuple"):
            if not isinstance(current, (list, tuple)) or len(current) != len(data):
                set_(holder, key, _plain(saved))
                return
            for i, (c, s) in enumerate(zip(current, data, strict=True)):
                put(current, i, c, s, f"{where}[{i}]")
        elif kind == "dict":
            if not isinstance(current, dict) or set(current) != set(data):
                set_(holder, key, _plain(saved))
                return
            for k, s in data.items():
                put(current, k, current[k], s, f"{where}[{k!r}]")
        elif kind == "object":
            attrs = getattr(current, "__dict__", None)
            if attrs is None or set(attrs) != set(data):
                raise SnapshotError(f"{where} does not have the attributes it was saved with")
            for k, s in data.items():
                put(current, k, attrs[k], s, f"{where}.{k}")
        else:  # pragma: no cover - a file from a newer rlbench
            raise SnapshotError(f"{where}: unknown saved kind {kind!r}")

    def set_(holder: Any, key: Any, value: Any) -> None:
        if isinstance(holder, (list, dict)):
            holder[key] = value
        elif isinstance(holder, tuple):
            raise SnapshotError(f"cannot replace element {key} of a tuple")
        else:
            setattr(holder, key, value)

    attrs = vars(obj)
    for key, saved in state.items():
        if key not in attrs:
            raise SnapshotError(f"{type(obj).__name__} has no attribute {key!r} to restore")
        put(obj, key, attrs[key], saved, key)


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise SnapshotError(f"{where} was a {kind.__name__}, now a {type(value).__name__}")
    return value


def _plain(saved: tuple[str, Any]) -> Any:
    """A saved list, tuple or dict as a new value (where the fresh object's differs in
    length or keys: a list that grew during training)."""
    kind, data = saved
    if kind == "value" or kind in ("tensor", "array"):
        return data
    if kind in ("list", "tuple"):
        items = [_plain(s) for s in data]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _plain(s) for k, s in data.items()}
    raise SnapshotError(f"a saved {kind} cannot be rebuilt outside the object it came from")
