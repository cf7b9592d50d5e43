"""The ``rlbench`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import pandas as pd
from rich.console import Console
from rich.table import Table

from rlbench import __version__, records
from rlbench.defaults import DEFAULT_LANES
from rlbench.errors import RlbenchError, SuiteError
from rlbench.export import FORMATS as EXPORT_FORMATS
from rlbench.fitting import fitted
from rlbench.progress import SuiteProgress
from rlbench.results import load_runs, recorded_references, summary_table
from rlbench.suite_lock import SuiteLock

# The executor, plugins, run specs and suites import torch and gymnasium: each command
# imports what it needs, so that `rlbench report` and `rlbench --help` start without them.
if TYPE_CHECKING:
    from rlbench.plugins import Catalogue
    from rlbench.runspec import RunSpec
    from rlbench.suite import Suite
    from rlbench.tracking import Tracking

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

console = Console()
err_console = Console(stderr=True)


class _Options:
    def __init__(self, autoload: bool, plugins: tuple[str, ...]) -> None:
        self.autoload = autoload
        self.plugins = plugins

    def catalogue(self, warn: bool = True) -> Catalogue:
        """The catalogue of the plugins asked for; ``warn``: say now which failed to load
        (else the command says it, after its own first line)."""
        from rlbench.plugins import load_catalogue

        try:
            catalogue = load_catalogue(autoload=self.autoload, extra_plugins=self.plugins)
        except RlbenchError as exc:
            _fail(str(exc))
        if warn:
            _warn(_broken_lines(catalogue))
        return catalogue


def _broken_lines(catalogue: Catalogue) -> list[str]:
    return [broken.describe() for broken in catalogue.broken]


def _fail(message: str, then: Sequence[str] = ()) -> NoReturn:
    """``error: message`` on stderr (then the warnings ``then``), and exit 2."""
    # soft_wrap: a problem stays on its one line, whatever the terminal's width.
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    _warn(then)
    sys.exit(EXIT_BAD_INPUT)


def _warn(lines: Sequence[str]) -> None:
    for line in lines:
        err_console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


class _ErrorFirst(click.ClickException):
    """A click error shown as rlbench shows its own: ``error: …`` on the first line (where a
    user and a script look), then the usage and where the help is."""

    def __init__(self, original: click.ClickException) -> None:
        message = original.format_message()
        super().__init__(message[:1].lower() + message[1:])
        self.exit_code = original.exit_code
        self.ctx = getattr(original, "ctx", None)

    def show(self, file: Any = None) -> None:
        lines = [f"error: {self.message}"]
        if self.ctx is not None:
            lines += [self.ctx.get_usage(), f"Try '{self.ctx.command_path} --help' for help."]
        click.echo("\n".join(lines), file=file, err=file is None)


#: Click's "no arguments: show the help" is not an error to reformat.
_SHOWS_HELP: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if cls is not None
)


@contextmanager
def _errors_first() -> Iterator[None]:
    try:
        yield
    except (_ErrorFirst, *_SHOWS_HELP):
        raise
    except click.ClickException as exc:
        raise _ErrorFirst(exc) from None


class _Group(click.Group):
    # Every usage error (of the group's options, a command's name, a command's arguments)
    # is raised while making a context or resolving and invoking the command.
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _errors_first():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _errors_first():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            # Click would say "Aborted!" and exit 1: Ctrl-C is exit 130, whatever the command
            # was doing (a run's own interruption is said by the command, before this).
            err_console.print(
                "interrupted: what was written is kept; run the same command again to finish",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rlbench")
@click.option(
    "--no-plugin-autoload",
    is_flag=True,
    envvar="RLBENCH_DISABLE_PLUGIN_AUTOLOAD",
    help="Load only rlbench's own plugins (and those named with -p), not every installed one.",
)
@click.option(
    "-p",
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE and register it as a plugin (repeatable).",
)
@click.pass_context
def cli(ctx: click.Context, no_plugin_autoload: bool, plugins: tuple[str, ...]) -> None:
    """Benchmark deep RL agents: run suites, list plugins."""
    ctx.obj = _Options(autoload=not no_plugin_autoload, plugins=plugins)


def executor_options(help_executor: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--executor local|ray`` (with ``help_executor``) and ``--address``: how `run` and
    `tune` choose where their work happens."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--address",
            default=None,
            help="The Ray cluster for --executor ray: HEAD:PORT, or 'auto' (the cluster "
            "started on this machine) [default: $RAY_ADDRESS, else auto].",
        )(command)
        return click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help=help_executor,
        )(command)

    return decorate


def log_options(
    help_log: str, default_dir: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--log NAMES`` (with ``help_log``) and ``--log-dir`` (files under ``default_dir`` by
    default): the experiment trackers of `run` and `tune`."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--log-dir",
            default=None,
            type=click.Path(file_okay=False, path_type=Path),
            help="Where trackers that write files write them (TensorBoard's event files, "
            f"MLflow's local store, W&B's offline runs) [default: {default_dir}].",
        )(command)
        return click.option("--log", "log_names", default=None, metavar="NAMES", help=help_log)(
            command
        )

    return decorate


@cli.command("run")
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--results",
    "results_root",
    default=Path("results"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Results root; runs go to RESULTS/<suite name>/runs/.",
)
@click.option(
    "-j",
    "--jobs",
    default="auto",
    show_default=True,
    help="Worker processes running runs in parallel ('auto': one per CPU core).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch threads per worker [default: 1; small networks run fastest on one].",
)
@click.option(
    "--lanes",
    type=click.IntRange(min=1),
    default=DEFAULT_LANES,
    show_default=True,
    help="Seeds of one configuration trained together as one batched computation, for "
    "agents that support it (every built-in agent: the DQNs, ppo, a2c, sac, td3); each "
    "run's results are what it gives alone. 1: every run on its own.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Evaluations between two mid-run checkpoints (agent, optimizer, buffers, random "
    "states, environments); an interrupted run resumes from its last one. 0: never.",
)
@click.option(
    "--keep-checkpoints",
    is_flag=True,
    help="Keep each run's last checkpoint when it completes (removed otherwise).",
)
@executor_options(
    "Where runs train: worker processes on this machine, or tasks on a Ray cluster "
    "(pip install 'rlbench[ray]'; see docs/cluster.md)."
)
@click.option(
    "--seeds",
    "seed_count",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Run seeds 0..N-1 instead of the suite's `seeds` (e.g. more seeds for published "
    "results; the runs of seeds already done are kept).",
)
@log_options(
    "Experiment trackers to log every run to, comma-separated: tensorboard, mlflow, wandb or "
    "a plugin's (`rlbench list` shows them); overrides the suite's `log`, and 'none' logs "
    "nowhere. Logging changes no result file.",
    "RESULTS/<suite name>/logs",
)
@click.option("--force", is_flag=True, help="Redo runs that already completed.")
@click.option(
    "--report/--no-report",
    default=True,
    show_default=True,
    help="Write the suite's report (tables, figures, report.md) at the end.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Where the output is not a terminal (a log, a pipe), print a line when each run "
    "ends only, not one at each of its evaluations.",
)
@click.pass_obj
def run_command(
    options: _Options,
    suite_file: Path,
    results_root: Path,
    jobs: str,
    threads: int | None,
    lanes: int,
    checkpoint_every: int,
    keep_checkpoints: bool,
    executor: str,
    address: str | None,
    seed_count: int | None,
    force: bool,
    report: bool,
    quiet: bool,
    log_names: str | None,
    log_dir: Path | None,
) -> None:
    """Run every agent × environment × seed × device of SUITE_FILE.

    Completed runs are skipped (unless --force); failed ones are redone, and interrupted
    ones resume from their last checkpoint.
    """
    from rlbench.checkpoint import CheckpointPolicy
    from rlbench.executor import run_suite
    from rlbench.runspec import expand
    from rlbench.suite import load_suite
    from rlbench.tracking import fan_out

    try:
        catalogue = options.catalogue()
        logs = _log_option(log_names, catalogue)
        suite = load_suite(suite_file, catalogue, log=logs)
        if seed_count is not None:
            suite.file = suite.file.model_copy(update={"seeds": seed_count})
        runs = expand(suite)
    except RlbenchError as exc:
        _fail(str(exc))
    _warn(suite.warnings)
    n_jobs = _parse_jobs(jobs, len(runs))
    try:
        suite_dir = _suite_dir(results_root, suite, runs)
        lock = SuiteLock(suite_dir)
        with lock:
            damaged = records.damaged_runs(suite_dir, [spec.run_id for spec in runs])
            _warn([f"{run_id}: damaged ({why}); it is redone" for run_id, why in damaged.items()])
            to_run = [
                s for s in runs if force or not records.RunDir(suite_dir, s.run_id).is_complete()
            ]
            with (
                SuiteProgress(console, total=len(to_run), quiet=quiet) as display,
                _tracking(catalogue, suite, suite_dir, log_dir, to_run) as tracking,
            ):
                result = run_suite(
                    suite,
                    runs,
                    results_root,
                    catalogue=catalogue,
                    jobs=n_jobs,
                    threads=threads,
                    force=force,
                    lanes=lanes,
                    autoload=options.autoload,
                    extra_plugins=options.plugins,
                    on_event=fan_out(tracking.handle, display.handle),
                    checkpoints=CheckpointPolicy(every=checkpoint_every, keep=keep_checkpoints),
                    executor=executor,
                    address=address,
                )
            if result.already_complete:
                console.print(
                    f"{len(result.already_complete)} run(s) were already complete and were not "
                    "rerun (--force reruns them).",
                    soft_wrap=True,
                )
            cut_short = force and result.interrupted
            _print_summary(result.suite_dir, redone=result.outcomes if cut_short else None)
            if report and not result.interrupted:
                _write_report(result.suite_dir, catalogue)
    except RlbenchError as exc:
        _fail(str(exc))
    except OSError as exc:
        # The results folder failed under us (read-only, full, a path taken by a folder):
        # what completed is on disk; what did not is redone by the next run.
        _fail(f"--results {results_root}: {_os_problem(exc)}")
    if result.interrupted:
        console.print(
            "Interrupted: completed runs are kept; run the same command again to resume.",
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    if result.failed:
        sys.exit(EXIT_RUN_FAILED)


def _log_option(value: str | None, catalogue: Catalogue) -> list[str] | None:
    """The loggers ``--log`` names (``None`` without it: the suite's ``log`` holds); exits
    2 with one line per name that cannot be logged to, before anything runs."""
    from rlbench.loggers import parse_names

    if value is None:
        return None
    names = parse_names(value)
    problems = catalogue.logger_problems(names)
    if problems:
        _fail("\n".join(f"--log {value}: {problem}" for problem in problems))
    return names


def _tracking(
    catalogue: Catalogue,
    suite: Suite,
    suite_dir: Path,
    log_dir: Path | None,
    runs: Sequence[RunSpec],
) -> Tracking:
    """The loggers of the suite's ``log`` (``--log``'s), fed from the runs' events."""
    from rlbench.loggers import LOGS_DIRNAME, LogContext
    from rlbench.tracking import Tracking

    context = LogContext(
        suite=suite.name,
        suite_dir=suite_dir,
        log_dir=log_dir if log_dir is not None else suite_dir / LOGS_DIRNAME,
        runs=tuple(spec.run_id for spec in runs),
    )
    specs = [catalogue.logger(name) for name in suite.file.log]
    return Tracking(specs, context, warn=lambda line: _warn([line]))


def _suite_dir(results_root: Path, suite: Suite, runs: Sequence[RunSpec]) -> Path:
    """The suite's results folder, created, once everything it must hold can go there:
    inside ``results_root``, and no file where one of its folders goes. Checked before
    anything is created, so that a refused run leaves the disk as it was."""
    suite_dir = records.inside(results_root, results_root / suite.name)
    runs_dir = suite_dir / records.RUNS_DIRNAME
    taken = []
    blocker = next((p for p in (runs_dir, *runs_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        if blocker == runs_dir:
            taken.append(f"{blocker} is a file, where the suite's runs folder goes; move it away")
        elif blocker == suite_dir:
            taken.append(
                f"{blocker} is a file, where the suite's results folder goes; move it away "
                "or choose another --results"
            )
        else:
            taken.append(
                f"--results {results_root}: {blocker} is a file, not a folder; choose "
                "another --results"
            )
    for spec in runs:
        run_dir = records.RunDir(suite_dir, spec.run_id).path  # checked to be in runs_dir
        if run_dir.exists() and not run_dir.is_dir():
            taken.append(
                f"{run_dir} is a file, where a run's folder goes; move it away (the run is "
                "then redone)"
            )
    if taken:
        raise RlbenchError("\n".join(taken))
    try:
        suite_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RlbenchError(f"--results {results_root}: {_os_problem(exc)}") from None
    return suite_dir


def _os_problem(exc: OSError) -> str:
    """``<path>: <reason>`` for an error of the operating system, on one line."""
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = exc.strerror or str(exc)
    return f"{path}: {reason}" if path is not None else reason


def _parse_jobs(value: str, runs: int) -> int:
    from rlbench.executor import default_jobs

    if value == "auto":
        return default_jobs(runs)
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        _fail(f"--jobs: expected a positive integer or 'auto', got {value!r}")
    return jobs


def _print_summary(suite_dir: Path, redone: Collection[str] | None = None) -> None:
    """Print (and write ``summary.csv``) the final-score table of ``suite_dir``. With
    ``redone`` (the runs an interrupted ``--force`` did redo), earlier results that it did
    not get to are left out, and a line says how many: they are not this command's."""
    runs = load_runs(suite_dir)
    earlier = 0
    if redone is not None and not runs.empty:
        stale = (runs["status"] == records.COMPLETE) & ~runs["run_id"].isin(list(redone))
        earlier = int(stale.sum())
        runs = runs[~stale]
    table_df = summary_table(runs)
    records.atomic_write_text(suite_dir / "summary.csv", table_df.to_csv(index=False))
    table = Table(title=f"Final evaluation return — {suite_dir.name} (mean ± std over seeds)")
    # Labels and ids whole (to be copied), numbers whole: the headers wrap instead.
    table.add_column("agent", no_wrap=True)
    table.add_column("environment", no_wrap=True)
    table.add_column("return", justify="right", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("not complete", justify="right")
    from rlbench.report.formatting import decimals_by_env

    # The report's precision rule, with the reference scores this run recorded.
    decimals = decimals_by_env(table_df, recorded_references(suite_dir))
    for row in table_df.itertuples(index=False):
        d = decimals.get(row.env, 1)
        score = "—" if pd.isna(row.mean) else f"{row.mean:.{d}f} ± {row.std:.{d}f}"
        table.add_row(row.label, row.env, score, str(row.n), str(row.not_complete or ""))
    console.print(fitted(console, table))  # a block per row where the table cannot fit
    bad = runs[runs["status"] != records.COMPLETE] if not runs.empty else runs
    for run in bad.itertuples(index=False):
        console.print(
            f"{run.status}: {run.run_id}: {run.error}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if earlier:
        console.print(
            f"--force was interrupted before it redid {earlier} run(s): their earlier results "
            "are left out of this table (run the command again to redo them).",
            soft_wrap=True,
        )
    console.print(f"Results: {suite_dir}", markup=False, highlight=False, soft_wrap=True)


def _write_report(suite_dir: Path, catalogue: Catalogue) -> None:
    from rlbench.report import write_report

    try:
        path = write_report([suite_dir], catalogue=catalogue)
    except RlbenchError as exc:
        err_console.print(f"no report: {exc}", markup=False, highlight=False, soft_wrap=True)
        return
    console.print(f"Report: {path}", markup=False, highlight=False, soft_wrap=True)


@cli.command("validate")
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def validate_command(options: _Options, suite_file: Path) -> None:
    """Check SUITE_FILE completely and show the runs it expands into, without running."""
    from rlbench.executor import lane_groups
    from rlbench.runspec import expand
    from rlbench.suite import load_suite

    # The plugins that failed to load are said after the verdict: the first line is the
    # error, where a user and a script look.
    catalogue = options.catalogue(warn=False)
    try:
        suite = load_suite(suite_file, catalogue)
        if suite.file.tune is not None:  # what `rlbench tune` would refuse, said now
            from rlbench.tune import resolve_plan  # optuna: only for a suite that tunes

            resolve_plan(suite, catalogue)
        # A suite whose agent or environment a broken plugin may provide loads (`run` fails
        # only those runs), but it cannot pass validation.
        cannot_run = suite.unavailable_problems()
        if cannot_run:
            raise SuiteError(str(suite_file), cannot_run)
    except RlbenchError as exc:
        _fail(str(exc), then=_broken_lines(catalogue))
    _warn(_broken_lines(catalogue))
    _warn(suite.warnings)
    runs = expand(suite)
    groups = lane_groups(runs, catalogue)
    console.print(
        f"{suite_file}: ok, {len(runs)} runs, trained as {len(groups)} groups "
        f"(an agent's seeds train together as lanes: rlbench run --lanes)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for pair in suite.skipped:  # the suite's skip_incompatible: one line each
        console.print(
            f"  skipped: {pair.describe()}", markup=False, highlight=False, soft_wrap=True
        )
    for spec in runs:
        note = f"  (cannot run: {spec.unavailable})" if spec.unavailable else ""
        console.print(f"  {spec.run_id}{note}", markup=False, highlight=False, soft_wrap=True)


@cli.command("list")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Also show every option with its default, and each agent's network roles.",
)
@click.pass_obj
def list_command(options: _Options, verbose: bool) -> None:
    """Show every agent, network and environment available, and the plugin providing it."""
    from rlbench import listing

    catalogue = options.catalogue()
    for title, provided in listing.sections(catalogue):
        if verbose:
            for line in listing.details(title, provided, console.width):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            console.print()
        else:
            console.print(listing.table(title, provided))
    console.print(listing.GYMNASIUM_NOTE, markup=False, highlight=False, soft_wrap=True)
    for broken in catalogue.broken:
        console.print(f"broken: {broken.describe()}", markup=False, highlight=False, soft_wrap=True)


@cli.command("compare")
@click.argument("baseline", type=click.Path(exists=True, path_type=Path))
@click.argument("candidate", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="A pair fails only when it is worse and its IQM dropped by more than this fraction "
    "of the environment's score range (solved - random; the baseline's |IQM| where the "
    "environment declares none).",
)
@click.option(
    "--confidence",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Confidence over the whole table: each pair's CI is at 1 - (1 - confidence) / pairs "
    "(Bonferroni).",
)
@click.option(
    "--allow-protocol-mismatch",
    is_flag=True,
    help="Compare runs measured differently (budget, evaluation interval, episodes or step "
    "limit, environment kwargs); the differences are listed under the table.",
)
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the Markdown table here (e.g. for a CI comment).",
)
@click.pass_obj
def compare_command(
    options: _Options,
    baseline: Path,
    candidate: Path,
    tolerance: float,
    confidence: float,
    allow_protocol_mismatch: bool,
    out_file: Path | None,
) -> None:
    """Compare CANDIDATE's results with BASELINE's: the regression gate.

    Each is a suite's results folder (results/cartpole) or a results bundle
    (results/reference/cartpole.rlbench.json). Per agent and environment on both sides:
    the IQM of final evaluation returns, P(candidate > baseline) with its bootstrap CI, and
    a verdict (better / worse / no conclusion). Prints a Markdown table. Exit status: 1 when
    a pair is worse beyond --tolerance, 0 otherwise, 2 on bad input or a protocol mismatch.
    """
    from rlbench.compare import compare

    try:
        result = compare(
            baseline,
            candidate,
            tolerance=tolerance,
            confidence=confidence,
            allow_protocol_mismatch=allow_protocol_mismatch,
            catalogue=options.catalogue,
        )
    except RlbenchError as exc:
        _fail(str(exc))
        return
    text = result.markdown()
    click.echo(text, nl=False)
    if out_file is not None:
        try:
            records.atomic_write_text(out_file, text)
        except OSError as exc:
            _fail(f"--out {out_file}: {_os_problem(exc)}")
    if result.failed:
        sys.exit(1)


@cli.command("report")
@click.argument(
    "results_dirs",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, path_type=Path),
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the report here [default: the first RESULTS_DIR's report/ folder].",
)
@click.pass_obj
def report_command(options: _Options, results_dirs: tuple[Path, ...], out_dir: Path | None) -> None:
    """Write the report of one or more suite results folders (e.g. results/cartpole) or
    results bundles (e.g. results/reference/cartpole.rlbench.json).

    Tables (CSV), figures (PNG, SVG), report.md and report.html go to RESULTS_DIR/report/
    (a bundle's: NAME-report/ beside it); with several, their agents are compared in one
    report.
    """
    from rlbench.report import terminal_scores, write_report

    try:
        # The plugins (torch) are loaded only for folders that recorded no reference scores.
        path = write_report(
            list(results_dirs),
            out_dir,
            catalogue=options.catalogue,
            warn=lambda line: _warn([line]),
        )
    except RlbenchError as exc:
        _fail(str(exc))
        return
    console.print(terminal_scores(path.parent, console))
    console.print(f"Report: {path}", markup=False, highlight=False, soft_wrap=True)


@cli.command("export")
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "format_name",
    required=True,
    type=click.Choice(list(EXPORT_FORMATS)),
    help="What to write. "
    + "; ".join(f"{name}: {fmt.description}" for name, fmt in EXPORT_FORMATS.items())
    + ".",
)
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the export here [default: RESULTS/export/<file> for a suite's results, "
    "RUN_DIR/README.md for a model card].",
)
@click.pass_obj
def export_command(
    options: _Options, results: Path, format_name: str, out_file: Path | None
) -> None:
    """Export results where other tools read them, and print the path written.

    rliable, marl-eval: RESULTS is a suite's results folder (e.g. results/cartpole) or a
    results bundle; their complete runs are exported. model-card: RESULTS is one run's
    folder (results/cartpole/runs/RUN_ID).
    """
    from rlbench.export import export

    try:
        path = export(
            results,
            format_name,
            out_file,
            catalogue=options.catalogue,
            warn=lambda line: _warn([line]),
        )
    except RlbenchError as exc:
        _fail(str(exc))
    console.print(str(path), markup=False, highlight=False, soft_wrap=True)


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--episodes",
    type=click.IntRange(min=1),
    default=None,
    help="Episodes to play [default: the run's eval_episodes, its final evaluation's].",
)
@click.pass_obj
def evaluate_command(options: _Options, run_dir: Path, episodes: int | None) -> None:
    """Evaluate the weights a run saved (RUN_DIR: results/SUITE/runs/RUN_ID).

    The agent is rebuilt from the run's config.json, loads weights.pt and plays greedily
    under the run's evaluation protocol (same environment, episode seeds and step limit).
    """
    from rlbench.saved_agent import evaluate_saved

    try:
        result = evaluate_saved(run_dir, options.catalogue(), episodes=episodes)
    except RlbenchError as exc:
        _fail(str(exc))
    # The mean in full: the same digits as the run's evaluations.csv.
    console.print(
        f"return {result['return_mean']!r} ± {result['return_std']:.2f} over "
        f"{result['episodes']} episodes (min {result['return_min']:g}, max "
        f"{result['return_max']:g}; mean length {result['length_mean']:.1f})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@cli.command("tune")
@click.option(
    "--suite",
    "suite_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Suite file whose [tune] table says what to tune [default: suites/tune.toml].",
)
@click.option("--agent", default=None, help="Label of an [[agents]] entry, or an agent name.")
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="ID",
    help="Environment to tune on (repeatable) [default: the [tune] table's].",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    help="Finished trials to reach, counting earlier runs of the study.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes working on the study at once.",
)
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "random", "grid"]),
    default=None,
    help="How trials pick parameters; grid: every combination of the choices "
    "[default: the [tune] table's, else tpe].",
)
@click.option(
    "--pruner",
    type=click.Choice(["median", "hyperband", "none"]),
    default=None,
    help="How unpromising trials are stopped early [default: the [tune] table's, else median].",
)
@click.option(
    "--storage",
    "storage_url",
    default=None,
    metavar="URL",
    help="Optuna database URL (e.g. postgresql://...) [default: a journal file "
    "under RESULTS/<suite>/tune/].",
)
@click.option(
    "--study-name",
    default=None,
    help="Name of the Optuna study; rerun with the same name to resume "
    "[default: <agent label>-<environments>].",
)
@click.option(
    "--seeds-per-trial",
    type=click.IntRange(min=1),
    default=None,
    help="Seeds each trial trains (10000, 10001, ...: never the suite's own) "
    "[default: the [tune] table's, else 3].",
)
@click.option(
    "--results",
    "results_root",
    default=Path("results"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Results root.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch threads per worker [default: 1; small networks run fastest on one].",
)
@log_options(
    "Experiment trackers to log every trial's runs to, comma-separated: tensorboard, mlflow, "
    "wandb or a plugin's; overrides the suite's `log`, and 'none' logs nowhere. Runs are "
    "named trial-<number>/<run id>, in a project named after the study.",
    "RESULTS/<suite>/tune/<study>/logs",
)
@executor_options(
    "Where the workers run: processes here, or tasks on a Ray cluster (with --jobs "
    "workers; default one per cluster CPU). Nodes on other machines need --storage URL."
)
@click.pass_obj
def tune_command(
    options: _Options,
    suite_file: Path | None,
    agent: str | None,
    envs: tuple[str, ...],
    trials: int | None,
    jobs: int,
    sampler: str | None,
    pruner: str | None,
    storage_url: str | None,
    study_name: str | None,
    seeds_per_trial: int | None,
    results_root: Path,
    threads: int | None,
    log_names: str | None,
    log_dir: Path | None,
    executor: str,
    address: str | None,
) -> None:
    """Tune an agent's hyperparameters with Optuna (docs/tuning.md).

    Rerunning the same command continues the study until it has --trials finished trials.
    At the end: the best parameters, and RESULTS/<suite>/tune/<study>/best.toml, a suite
    that compares the tuned agent with the default one on fresh seeds.
    """
    import re

    import torch

    from rlbench import tune as tuning

    jobs_given = click.get_current_context().get_parameter_source("jobs") not in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    from rlbench.executor import default_threads
    from rlbench.suite import NAME_PATTERN, load_suite

    suite_file = suite_file or tuning.default_suite_file()
    try:
        catalogue = options.catalogue()
        suite = load_suite(suite_file, catalogue, log=_log_option(log_names, catalogue))
        overrides = tuning.TuneOverrides(agent, envs, trials, seeds_per_trial, sampler, pruner)
        plan = tuning.resolve_plan(suite, catalogue, overrides)
    except RlbenchError as exc:
        _fail(str(exc))
        return
    name = study_name or tuning.default_study_name(plan)
    if not re.match(NAME_PATTERN, name):
        _fail(f"--study-name: use letters, digits, '_', '.' and '-', got {name!r}")
    location = tuning.StudyLocation(results_root, suite.name, name, storage_url)
    if threads is None:
        threads = default_threads()
    job = tuning.TuneJob(
        plan,
        location,
        threads,
        options.autoload,
        options.plugins,
        log=tuple(suite.file.log),
        log_dir=log_dir,
    )
    dims = ", ".join(f"{k} {d.to_raw()}" for k, d in plan.dims.items())
    console.print(
        f"Tuning {plan.label} ({plan.agent}) on {', '.join(e for e, _ in plan.environments)}: "
        f"study {name!r} in {location.storage_label}; {job.target} trials of "
        f"{len(plan.seeds)} seeds x {plan.steps_label} steps; {plan.sampler} sampler, "
        f"{plan.pruner} pruner (warm-up {plan.warmup_steps} steps); objective: "
        f"{tuning.objective_label(plan)}.\nSearch space: {dims}"
        + (f"; fixed: {plan.fixed}" if plan.fixed else "")
        + (
            f"\nLogging each trial's runs to {', '.join(job.log)} (project {name!r}, runs "
            f"trial-<number>/<run id>; files under {job.tracker_dir})."
            if job.log
            else ""
        ),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

    def write(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    torch.set_num_threads(job.threads)
    try:
        ray_jobs = jobs if jobs_given else 0
        outcome = tuning.tune(
            job,
            catalogue,
            jobs=ray_jobs if executor == "ray" else jobs,
            write=write,
            executor=executor,
            address=address,
        )
    except RlbenchError as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        console.print("Interrupted: run the same command again to continue the study.")
        sys.exit(EXIT_INTERRUPTED)
    counts = outcome.counts
    write(
        f"Study {name!r}: {counts.finished} finished trials ({counts.complete} complete, "
        f"{counts.pruned} pruned, {counts.failed} failed"
        + (f"; {counts.retried} retried after their worker died" if counts.retried else "")
        + ")."
    )
    if outcome.best is not None:
        write(f"Best trial {outcome.best.number}: value {outcome.best.value:.6g}")
        for key, value in outcome.best.params.items():
            write(f"  {key} = {value!r}")
    for note in outcome.notes:
        write(f"note: {note}")
    for path in outcome.files:
        write(f"Wrote {path}")
    if outcome.best is not None:
        best_file = location.study_dir / tuning.BEST_SUITE
        write(f"Compare tuned vs default on fresh seeds: rlbench run {best_file}")
    else:
        sys.exit(EXIT_RUN_FAILED)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
