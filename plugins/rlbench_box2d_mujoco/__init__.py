"""rlbench's built-in plugin for Gymnasium's Box2D and MuJoCo tasks: reference scores, and
the install command of the optional extra each needs.

The environments are Gymnasium's, made with ``gym.make``; registering them costs nothing
when the extras are absent (Gymnasium imports Box2D or MuJoCo only when one is made), and a
suite that names one is then refused at validation with the command below.

``random`` is the mean return of a uniformly random policy, measured with
``python benchmarks/random_scores.py ENV --episodes N`` (reset seeds 0..N-1, action-space
seed 0; each mean ± std and N are beside its entry) with gymnasium 1.4.0, box2d 2.3.10 and
mujoco 4.0.0. ``solved`` is Gymnasium's ``reward_threshold`` (the registry's spec) where it
sets one; Walker2d-v5 has none, so its ``solved`` is RL Zoo's published score for PPO
(rl-baselines3-zoo ``benchmark.md``, measured on Walker2d-v3, whose reward v5 keeps).
"""

from __future__ import annotations

import functools

import gymnasium as gym

from rlbench import EnvironmentSpec, ReferenceScores, hookimpl

BOX2D_INSTALL = 'pip install -c constraints.txt ".[box2d]"'
MUJOCO_INSTALL = 'pip install -c constraints.txt ".[mujoco]"'

# LunarLander-v3 (1000 episodes each): random -181.7 ± 109.4; with continuous=True,
# -209.8 ± 125.6 (a random thrust burns more fuel). solved: reward_threshold 200 for both
# (Gymnasium's docs: "An episode is considered a solution if it scores at least 200").
LUNAR_LANDER = EnvironmentSpec(
    name="LunarLander-v3",
    make=functools.partial(gym.make, "LunarLander-v3"),
    reference=ReferenceScores(random=-181.7, solved=200.0),
    variants=(ReferenceScores(random=-209.8, solved=200.0, kwargs={"continuous": True}),),
    description="Land a craft on a pad (Box2D); continuous=True for throttle control.",
    install=BOX2D_INSTALL,
)

# name: (random-policy return, solved, description)
MUJOCO: dict[str, tuple[float, float, str]] = {
    # random 17.6 ± 18.2 (1000 episodes; it falls within ~20 steps); reward_threshold
    "Hopper-v5": (17.6, 3800.0, "Make a one-legged robot hop forward (MuJoCo)."),
    # random 1.8 ± 6.2 (1000 episodes); no reward_threshold: RL Zoo benchmark.md, ppo
    # Walker2d-v3, 3478.798 ± 821.708 after 1M steps
    "Walker2d-v5": (1.8, 3478.798, "Make a two-legged robot walk forward (MuJoCo)."),
    # random -281.7 ± 78.5 (1000 episodes of 1000 steps); reward_threshold
    "HalfCheetah-v5": (-281.7, 4800.0, "Make a planar cheetah run forward (MuJoCo)."),
    # random -48.0 ± 83.0 (100 episodes: most last 1000 steps, at ~2,700 steps/s); threshold
    "Ant-v5": (-48.0, 6000.0, "Make a four-legged robot walk forward (MuJoCo)."),
}


@hookimpl
def rlbench_register_environments() -> list[EnvironmentSpec]:
    return [
        LUNAR_LANDER,
        *(
            EnvironmentSpec(
                name=name,
                make=functools.partial(gym.make, name),
                reference=ReferenceScores(random=random, solved=solved),
                description=description,
                install=MUJOCO_INSTALL,
            )
            for name, (random, solved, description) in MUJOCO.items()
        ),
    ]
