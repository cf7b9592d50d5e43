"""Defaults the command line shows in its help, kept apart from the modules that use them
(which import torch) so that ``rlbench --help`` and ``rlbench report`` start without torch."""

from __future__ import annotations

#: The most seeds trained together by default: 16 lanes of the CartPole DQN keep one core
#: busy with matrix products, where one lane leaves it mostly waiting on Python.
DEFAULT_LANES = 16
