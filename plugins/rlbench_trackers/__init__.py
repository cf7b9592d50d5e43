"""rlbench's built-in loggers: TensorBoard, MLflow and Weights & Biases, each an optional
extra, registered through the ``rlbench_register_loggers`` hook like a third party's.

Registering them imports none of the trackers (every worker process loads the plugins);
each tracker's module is imported by its logger's ``create``, in the driver, when a command
chooses it (``rlbench run --log tensorboard,mlflow`` or a suite's ``log = [...]``). Every
logger writes the same names: ``eval/<column>`` for each column of ``evaluations.csv``
but ``step`` (at the evaluation's step), ``train/<metric>`` for each column of ``metrics.csv``
and ``episode/return``, ``episode/length`` for each row of ``episodes.csv`` (at the step the
episode ended), plus the run's config, provenance and status.
"""

from __future__ import annotations

from rlbench import LogContext, Logger, LoggerSpec, hookimpl


def _install(extra: str) -> str:
    return f'pip install -c constraints.txt -e ".[{extra}]"'


def tensorboard(context: LogContext) -> Logger:
    """TensorBoard event files, one folder per run under LOG_DIR/tensorboard
    (`tensorboard --logdir results/SUITE/logs/tensorboard`)."""
    from rlbench_trackers.tensorboard_logger import TensorBoardLogger

    return TensorBoardLogger(context)


def mlflow(context: LogContext) -> Logger:
    """MLflow runs in the experiment named after the suite, at $MLFLOW_TRACKING_URI (a
    server, a database) or else a local file store, LOG_DIR/mlruns."""
    from rlbench_trackers.mlflow_logger import MlflowLogger

    return MlflowLogger(context)


def wandb(context: LogContext) -> Logger:
    """Weights & Biases runs in the project named after the suite, offline under
    LOG_DIR/wandb unless $WANDB_MODE says online (`wandb sync` uploads offline runs)."""
    from rlbench_trackers.wandb_logger import WandbLogger

    return WandbLogger(context)


LOGGERS = [
    LoggerSpec(
        name="tensorboard",
        create=tensorboard,
        requires=("tensorboard",),
        install=_install("tensorboard"),
    ),
    LoggerSpec(name="mlflow", create=mlflow, requires=("mlflow",), install=_install("mlflow")),
    LoggerSpec(name="wandb", create=wandb, requires=("wandb",), install=_install("wandb")),
]


@hookimpl
def rlbench_register_loggers() -> list[LoggerSpec]:
    return list(LOGGERS)
