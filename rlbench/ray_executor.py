"""A suite's lane groups as tasks on a Ray cluster (``rlbench run --executor ray``).

Each group is one Ray task asking for the CPUs its torch threads use (and one GPU for a
``cuda`` group). No filesystem is shared: a task trains in a temporary folder on its node,
and every file it writes (:class:`records.RunDir`'s sink) and every progress event travel to
the driver through one Ray actor on the driver's node (:class:`Mailbox`), in order; the
driver writes each file under the suite's results folder with the same atomic writes as a
local run, so the results folder on the driver is the one source of truth and "complete is
written last" holds there too.

Faults. A task whose node or worker process dies (the raylet killed, the machine lost, out of
memory) is submitted again, up to ``retries`` times, with the group's latest checkpoint as
the driver has it, so the group resumes from it on any node (:mod:`rlbench.checkpoint`).
A run that raises is recorded as failed by the task itself, as locally. The driver killed:
the next ``rlbench run`` resumes every group from its checkpoint on the driver's disk.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlbench import checkpoint, records
from rlbench.checkpoint import CheckpointPolicy
from rlbench.errors import RlbenchError
from rlbench.recording import ProgressCallback, RunOutcome
from rlbench.runspec import RunSpec

#: Times a group is submitted again after its node or worker died.
DEFAULT_RETRIES = 3
INSTALL_HINT = "pip install 'rlbench[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RlbenchError(
            f"--executor ray needs Ray, which is not installed; install it with {INSTALL_HINT}"
        ) from None
    return ray


def connect(address: str | None) -> Any:
    """Connect this process to the Ray cluster at ``address`` (``HEAD:PORT``, ``auto``, or
    ``None``: ``$RAY_ADDRESS``, else ``auto``); one clear line when it cannot."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    if ray.is_initialized():
        return ray
    problem = _unreachable(address)
    if problem:
        raise RlbenchError(
            f"--address {address}: cannot reach a Ray cluster ({problem}); start one with "
            "`ray start --head` (see docs/cluster.md) or give --address HEAD:PORT"
        )
    try:
        ray.init(
            address=address,
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise RlbenchError(
            f"--address {address}: cannot reach a Ray cluster ({reason}); start one with "
            "`ray start --head` (see docs/cluster.md) or give --address HEAD:PORT"
        ) from None
    return ray


def _unreachable(address: str) -> str:
    """Why nothing answers at ``HOST:PORT`` (ray.init would retry for minutes), or ``""``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return ""  # "auto", or a form ray.init knows better: let it judge
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        return f"nothing answers at {host}:{port}: {exc.strerror or exc}"
    return ""


def task_resources(group: Sequence[RunSpec], threads: int) -> dict[str, float]:
    """What the task of ``group`` asks the cluster for: its torch threads as CPUs, and a GPU
    when it trains on CUDA."""
    wants = {"CPU": float(threads)}
    if group[0].device.startswith("cuda"):
        wants["GPU"] = 1.0
    return wants


def cluster_cpus(ray: Any) -> int:
    """The CPUs of the cluster's live nodes: how many one-thread groups can train at once."""
    return int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")))


def check_resources(ray: Any, wants: Sequence[Mapping[str, float]]) -> None:
    """One line, before any run starts, when no live node can give a task what it asks."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for need in wants:
        if not any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            have = ", ".join(
                f"{{{', '.join(f'{k}: {node.get(k, 0):g}' for k in need)}}}" for node in nodes
            )
            asks = ", ".join(f"{k}: {v:g}" for k, v in need.items())
            raise RlbenchError(
                f"the Ray cluster has no node with {{{asks}}} for a task (its nodes have "
                f"{have or 'nothing'}); add such a node or lower --threads"
            )


def checkpoint_files(suite_dir: Path, group: Sequence[RunSpec]) -> dict[str, bytes]:
    """The group's checkpoint as the driver has it (``{file name: bytes}``, empty when there
    is none of exactly this group), to hand to the task that resumes it."""
    run_dir = records.RunDir(suite_dir, group[0].run_id)
    found = checkpoint.info(run_dir)
    if found is None or found["run_ids"] != [spec.run_id for spec in group]:
        return {}
    names = (records.CHECKPOINT, records.CHECKPOINT_INFO)
    try:
        return {name: run_dir.file(name).read_bytes() for name in names}
    except OSError:
        return {}


class Mailbox:
    """The driver's inbox (a Ray actor on the driver's node): what tasks send, in the order
    each sent it. Tasks send without waiting for an answer: a Ray task that waits in
    ``ray.get`` lends its CPU to another task, which would then oversubscribe the node."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict[str, Any]]] = []

    def put(self, item: tuple[str, str, dict[str, Any]]) -> None:
        self.items.append(item)

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        items, self.items = self.items, []
        return items

    def flush(self) -> None:
        """Answered once everything the caller sent before is in the inbox."""


def train_group(
    group: list[dict[str, Any]],
    suite_name: str,
    saved: dict[str, bytes],
    threads: int,
    autoload: bool | None,
    extra_plugins: Sequence[str],
    checkpoints: CheckpointPolicy,
    channel: Any,
) -> list[dict[str, Any]]:
    """The body of one Ray task: train ``group`` (:meth:`RunSpec.to_json` of each run) in a
    temporary folder of this node, from the checkpoint files ``saved`` when given, sending
    every file written and every progress event to the driver through ``channel``; the
    runs' outcomes."""
    import ray
    import torch

    from rlbench.plugins import load_catalogue
    from rlbench.training import execute_lanes

    torch.set_num_threads(threads)
    specs = [RunSpec.from_json(data) for data in group]
    node_id = ray.get_runtime_context().get_node_id()
    node_ip = ray.util.get_node_ip_address()
    where = f"{node_ip} node {node_id[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="rlbench-ray-"))
    try:
        suite_dir = scratch / suite_name
        first = records.RunDir(suite_dir, specs[0].run_id)
        for name, data in saved.items():
            records.atomic_write_bytes(first.file(name), data)

        def sink(run_id: str, name: str, data: bytes | None) -> None:
            channel.put.remote(("file", run_id, {"name": name, "data": data}))

        def forward(event: str, run_id: str, payload: Mapping[str, Any]) -> None:
            channel.put.remote((event, run_id, dict(payload)))
            if event == "start":
                channel.put.remote(("node", run_id, {"node": where}))

        catalogue = load_catalogue(autoload=autoload, extra_plugins=extra_plugins)
        placement = {"ray_node": {"ip": node_ip, "id": node_id}}
        outcomes = execute_lanes(specs, suite_dir, catalogue, forward, checkpoints, sink, placement)
        # One actor handles one caller's calls in order: after this, all of them are in.
        ray.get(channel.flush.remote())
        return [asdict(outcome) for outcome in outcomes]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_groups(
    groups: Sequence[Sequence[RunSpec]],
    suite_dir: Path,
    *,
    address: str | None,
    threads: int,
    autoload: bool | None,
    extra_plugins: Sequence[str],
    checkpoints: CheckpointPolicy,
    notify: ProgressCallback,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, RunOutcome]:
    """Train ``groups`` as Ray tasks and record every run under the driver's ``suite_dir``;
    the outcome of each run. Ctrl-C cancels the tasks (runs resume from their checkpoints
    on the next ``rlbench run``)."""
    ray = connect(address)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    wants = [task_resources(group, threads) for group in groups]
    check_resources(ray, wants)
    # The mailbox lives with the driver (its node's loss would be the driver's too).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    channel = ray.remote(Mailbox).options(num_cpus=0, scheduling_strategy=here).remote()
    remote = ray.remote(train_group)

    def submit(group: Sequence[RunSpec], need: Mapping[str, float]) -> Any:
        # Retries are the driver's (below), so that each resumes from the latest checkpoint.
        options = {"num_cpus": need["CPU"], "num_gpus": need.get("GPU", 0), "max_retries": 0}
        saved = checkpoint_files(suite_dir, group) if checkpoints.resume else {}
        for spec in group:
            run_dir = records.RunDir(suite_dir, spec.run_id)
            # The task starts these runs over in an empty folder (so does the driver's copy),
            # or resumes them (what a killed driver was writing is dropped).
            run_dir.remove_temporaries() if saved else run_dir.clear()
        specs = [spec.to_json() for spec in group]
        return remote.options(**options).remote(
            specs,
            suite_dir.name,
            saved,
            threads,
            autoload,
            tuple(extra_plugins),
            checkpoints,
            channel,
        )

    def fail(group: Sequence[RunSpec], error: str) -> None:
        for spec in group:
            run_dir = records.RunDir(suite_dir, spec.run_id)
            record = run_dir.write_status(records.FAILED, error=error)
            notify("end", spec.run_id, {"status": records.FAILED, "error": error, "record": record})
            outcomes[spec.run_id] = RunOutcome(spec.run_id, records.FAILED, error=error)

    def drain() -> None:
        for event, run_id, payload in ray.get(channel.take.remote()):
            if event == "file":
                run_dir = records.RunDir(suite_dir, run_id)
                if payload["data"] is None:
                    run_dir.remove(payload["name"])
                else:
                    run_dir.put_bytes(payload["name"], payload["data"])
            else:
                notify(event, run_id, payload)

    outcomes: dict[str, RunOutcome] = {}
    running = {submit(g, w): (list(g), w, 0) for g, w in zip(groups, wants, strict=True)}
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            # Everything a finished task sent is in (it flushed before returning), and so is
            # what a dead one sent before it died, its last checkpoint included.
            drain()
            for ref in done:
                group, need, attempt = running.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    fail(group, f"the task raised: {exc.cause!r}")
                    continue
                except ray.exceptions.RayError as exc:
                    reason = type(exc).__name__
                    if attempt < retries:
                        for spec in group:
                            notify("retry", spec.run_id, {"reason": reason})
                        running[submit(group, need)] = (group, need, attempt + 1)
                    else:
                        fail(group, f"its Ray task died {attempt + 1} times ({reason})")
                    continue
                for data in results:
                    outcomes[data["run_id"]] = RunOutcome(**data)
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
    return outcomes
