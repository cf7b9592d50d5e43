"""rlbench's built-in network plugin: the multi-layer perceptron."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from rlbench import NetworkConfig, NetworkSpec, hookimpl

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


class MLPConfig(NetworkConfig):
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64, 64], min_length=0
    )
    """Width of each hidden layer, input side first; [] is a linear model."""
    activation: Literal["relu", "tanh", "elu", "gelu", "silu", "leaky_relu"] = "relu"
    """Non-linearity after every hidden layer."""


def build_mlp(in_features: int, out_features: int, config: MLPConfig) -> nn.Module:
    """Fully connected layers with a non-linearity between them (no output activation)."""
    layers: list[nn.Module] = []
    width = in_features
    for hidden in config.hidden_sizes:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[config.activation]()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


@hookimpl
def rlbench_register_networks() -> list[NetworkSpec]:
    return [NetworkSpec(name="mlp", build=build_mlp, config_model=MLPConfig)]
