"""rlbench.report and `rlbench report`: tables, figures, report.md / report.html."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from click.testing import CliRunner
from synthetic_results import FakeRun, write_results

from rlbench import records, report
from rlbench.cli import cli
from rlbench.errors import RlbenchError
from rlbench.plugins import Catalogue, load_catalogue

REPO = Path(__file__).resolve().parents[1]
FAILED_ERROR = "ValueError: loss became nan"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(autoload=False)


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two agents, 4 seeds, three environments (Unscored-v0, which no plugin describes, has
    no reference scores), one failed and one skipped run, a run never started; `good` is
    clearly better."""
    runs = []
    for seed in range(4):
        runs += [
            FakeRun("good", "CartPole-v1", seed, final=480.0 + seed, start=20.0),
            FakeRun(
                "bad", "CartPole-v1", seed, final=40.0 + seed, start=20.0, steps_per_second=400.0
            ),
            FakeRun("good", "Acrobot-v1", seed, final=-90.0 - seed, start=-500.0),
            FakeRun("bad", "Acrobot-v1", seed, final=-400.0 - seed, start=-500.0),
            FakeRun("good", "Unscored-v0", seed, final=-150.0, start=-1400.0),
            FakeRun("bad", "Unscored-v0", seed, final=-1100.0, start=-1400.0),
        ]
    runs += [
        FakeRun("bad", "CartPole-v1", 4, status=records.FAILED, error=FAILED_ERROR),
        FakeRun(
            "good",
            "CartPole-v1",
            0,
            device="cuda",
            status=records.SKIPPED,
            error="device 'cuda' requested but CUDA is not available",
        ),
    ]
    return write_results(
        tmp_path_factory.mktemp("results"),
        "synth",
        runs,
        not_started=["good__Acrobot-v1__seed9__cpu__0000000000"],
    )


@pytest.fixture(scope="module")
def written(suite_dir: Path, catalogue: Catalogue) -> Path:
    return report.write_report([suite_dir], catalogue=catalogue, n_resamples=2000)


def test_outputs_go_to_the_report_folder(written: Path, suite_dir: Path) -> None:
    out = suite_dir / report.REPORT_DIRNAME
    assert written == out / report.REPORT_MD
    assert (out / report.REPORT_HTML).is_file()
    for name in report.TABLE_FILES.values():
        assert (out / report.TABLES_DIRNAME / name).is_file(), name


def test_every_figure_is_a_decodable_image(written: Path) -> None:
    figures = written.parent / report.FIGURES_DIRNAME
    for name in report.FIGURE_NAMES:
        image = matplotlib.image.imread(figures / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name
        assert image.std() > 0.01, f"{name}.png is blank"
        root = ET.parse(figures / f"{name}.svg").getroot()
        assert root.tag.endswith("svg") and len(root) > 0, name


def test_report_md_holds_every_section_in_order(written: Path) -> None:
    text = written.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings == list(report.SECTIONS)
    for name in report.FIGURE_NAMES:
        assert f"](figures/{name}.png)" in text
    for fact in (
        "synthetic results for tests",
        "1,000 environment steps per run",
        "evaluation every 250 steps",
        "5 greedy episodes",
        "torch 2.0.0",
        "git 0123456789",
        "seeds | 0, 1, 2, 3",
    ):
        assert fact in text, fact


def test_failed_skipped_and_unstarted_runs_are_shown(written: Path, suite_dir: Path) -> None:
    text = written.read_text(encoding="utf-8")
    section = text.split("## Runs that did not complete")[1].split("\n## ")[0]
    assert "**failed**" in section and FAILED_ERROR in section
    assert "**skipped**" in section and "CUDA is not available" in section
    assert "**not started**" in section and "seed9" in section
    assert "3 runs did not complete" in text
    runs = pd.read_csv(written.parent / "tables" / "runs.csv")
    assert sorted(runs["status"].value_counts().items()) == [
        ("complete", 24),
        ("failed", 1),
        ("not started", 1),
        ("skipped", 1),
    ]
    scores = pd.read_csv(written.parent / "tables" / "scores.csv")
    bad = scores[(scores["agent_key"] == "bad") & (scores["env"] == "CartPole-v1")].iloc[0]
    assert bad["n"] == 4 and bad["not_complete"] == 1


def test_summary_claims_only_what_the_ci_supports(written: Path) -> None:
    summary = written.read_text(encoding="utf-8").split("## Summary")[1].split("\n## ")[0]
    assert (
        "**good beats bad** over all 3 environments (P(good > bad) = 1.00, 95% CI "
        "[1.00, 1.00]), on CartPole-v1 (1.00 [1.00, 1.00])" in summary
    )
    assert "bad beats" not in summary
    assert "Unscored-v0 declares no reference scores" in summary
    assert "CartPole-v1 solved (final return ≥ 475.0) by good in 4/4 runs" in summary


def test_tables_hold_the_numbers(written: Path) -> None:
    tables = written.parent / "tables"
    scores = pd.read_csv(tables / "scores.csv")
    good = scores[(scores["agent_key"] == "good") & (scores["env"] == "CartPole-v1")].iloc[0]
    assert good["iqm"] == pytest.approx(481.5) and good["success_rate"] == 1.0
    assert good["ci_low"] <= 481.5 <= good["ci_high"]
    refs = pd.read_csv(tables / "references.csv").set_index("env")
    assert refs.loc["CartPole-v1", "random"] == 22.2 and refs.loc["CartPole-v1", "solved"] == 475
    assert pd.isna(refs.loc["Unscored-v0", "solved"])
    aggregate = pd.read_csv(tables / "aggregate.csv")
    assert set(aggregate["metric"]) == {"median", "iqm", "mean", "optimality_gap"}
    assert (aggregate["n_envs"] == 2).all()
    poi = pd.read_csv(tables / "probability_of_improvement.csv")
    overall = poi[poi["env"] == "all environments"].iloc[0]
    assert overall["poi"] == 1.0 and overall["verdict"] == "a better"


def test_report_html_embeds_images(written: Path) -> None:
    page = (written.parent / report.REPORT_HTML).read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(report.FIGURE_NAMES)
    assert 'src="figures/' not in page
    for section in report.SECTIONS:
        assert f"<h2>{section}</h2>" in page
    assert "<table>" in page


def test_statistics_are_reproducible(suite_dir: Path, catalogue: Catalogue) -> None:
    first = report.collect([suite_dir], catalogue=catalogue, n_resamples=500)
    again = report.collect([suite_dir], catalogue=catalogue, n_resamples=500)
    pd.testing.assert_frame_equal(first.scores, again.scores)
    pd.testing.assert_frame_equal(first.aggregate.table, again.aggregate.table)
    pd.testing.assert_frame_equal(first.poi, again.poi)


def test_comparing_two_results_folders(tmp_path: Path, catalogue: Catalogue) -> None:
    one = write_results(
        tmp_path / "a",
        "s",
        [FakeRun("dqn", "CartPole-v1", seed, final=100.0 + seed) for seed in range(3)],
    )
    two = write_results(
        tmp_path / "b",
        "s",
        [FakeRun("dqn", "CartPole-v1", seed, final=400.0 + seed) for seed in range(3)],
    )
    path = report.write_report([one, two], catalogue=catalogue, n_resamples=500)
    assert path == one / "report" / "report.md"
    text = path.read_text(encoding="utf-8")
    assert "dqn @ a/s" in text and "dqn @ b/s" in text
    assert text.count("### Suite s") == 2
    assert (
        "**dqn @ b/s beats dqn @ a/s** on CartPole-v1 (P(dqn @ b/s > dqn @ a/s) = 1.00, "
        "95% CI [1.00, 1.00]) (3 and 3 runs)." in text
    )


def test_every_run_failed(tmp_path: Path, catalogue: Catalogue) -> None:
    folder = write_results(
        tmp_path,
        "s",
        [FakeRun("a", "CartPole-v1", 0, status=records.FAILED, error="RuntimeError: x")],
    )
    path = report.write_report([folder], catalogue=catalogue)
    text = path.read_text(encoding="utf-8")
    assert [h for h in re.findall(r"^## (.+)$", text, flags=re.MULTILINE)] == list(report.SECTIONS)
    assert "RuntimeError: x" in text and "No learning curves figure: no run completed" in text
    assert not list((path.parent / "figures").iterdir())


def test_not_a_results_folder(tmp_path: Path) -> None:
    write_results(tmp_path, "inner", [FakeRun("a", "CartPole-v1", 0, final=1.0)])
    with pytest.raises(RlbenchError, match=r"not a suite's results folder.*pass e\.g\."):
        report.write_report([tmp_path])


def test_cli_report_rejects_a_folder_without_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a suite's results folder" in " ".join(result.output.split())


def test_end_to_end_tiny_suite(tmp_path: Path) -> None:
    """`rlbench run suites/tiny.toml` and then `rlbench report` on it, as a user would.
    One torch thread: on a busy 2-core machine more threads make the run several times
    slower."""
    exe = [sys.executable, "-m", "rlbench.cli"]
    env = {**os.environ, "RLBENCH_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}
    run = subprocess.run(
        [
            *exe,
            "run",
            str(REPO / "suites" / "tiny.toml"),
            "--results",
            str(tmp_path),
            "-j",
            "1",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    done = subprocess.run(
        [*exe, "report", str(tmp_path / "tiny")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    md = tmp_path / "tiny" / "report" / "report.md"
    assert f"Report: {md}" in done.stdout and "naive_dqn" in done.stdout
    text = md.read_text(encoding="utf-8")
    assert re.findall(r"^## (.+)$", text, flags=re.MULTILINE) == list(report.SECTIONS)
    assert "All 4 runs completed." in text
    for name in report.FIGURE_NAMES:
        assert matplotlib.image.imread(md.parent / "figures" / f"{name}.png").size > 0
    scores = pd.read_csv(md.parent / "tables" / "scores.csv")
    assert set(scores["agent_key"]) == {"naive_dqn", "dqn"} and (scores["n"] == 2).all()


def _recorded(catalogue: Catalogue, *envs: str) -> dict[str, records.EnvReference | None]:
    return {env: records.EnvReference.declared(catalogue, env) for env in envs}


def test_recorded_reference_scores_give_the_report_the_plugins_give(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    """`rlbench run` records each environment's reference scores in suite.json; a report
    from them says what one from the plugins says, to the byte."""
    runs = [
        FakeRun(lab, env, s, final=f + s)
        for lab, f in (("a", 300.0), ("b", 100.0))
        for env in ("CartPole-v1", "Pendulum-v1")
        for s in range(3)
    ]
    old = write_results(tmp_path / "old", "s", runs)
    new = write_results(
        tmp_path / "new", "s", runs, references=_recorded(catalogue, "CartPole-v1", "Pendulum-v1")
    )
    assert records.SuiteManifest.read(new).references["CartPole-v1"].solved == 475.0
    texts = []
    for folder in (old, new):
        path = report.write_report([folder], catalogue=catalogue, n_resamples=200)
        texts.append(path.read_text(encoding="utf-8").replace(str(folder), "FOLDER"))
    assert texts[0] == texts[1]
    assert "declared by plugin classic_control" in texts[1]


def test_rlbench_report_imports_neither_torch_nor_gymnasium(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    """Reading results needs no deep-learning stack: `rlbench report` on a folder that
    recorded its reference scores imports neither torch nor gymnasium (nor the plugins)."""
    folder = write_results(
        tmp_path,
        "s",
        [FakeRun("a", "CartPole-v1", s, final=100.0 + s) for s in range(2)],
        references=_recorded(catalogue, "CartPole-v1"),
    )
    runner = (
        "import sys\n"
        "from rlbench.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print('EXIT', code, 'MODULES', *sorted(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", runner, "report", str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[:3] == ["EXIT", "0", "MODULES"], done.stdout + done.stderr
    assert f"Report: {folder / 'report' / 'report.md'}" in done.stdout
    modules = set(last[3:])
    assert "rlbench.report" in modules and "pandas" in modules  # the runner saw the report
    for heavy in ("torch", "gymnasium", "rlbench.plugins", "rlbench.executor"):
        assert heavy not in modules, f"rlbench report imported {heavy}"


def test_the_final_scores_figure_keeps_its_reference_lines_off_the_frame() -> None:
    import pandas as pd

    from rlbench.figures import final_scores_figure

    finals = pd.DataFrame(
        {
            "agent_key": ["a"] * 3 + ["b"] * 3,
            "env": ["E"] * 6,
            "return_mean": [30.0, 40.0, 50.0, 60.0, 70.0, 80.0],
            "ref_random": [20.0] * 6,  # below every run: the lowest thing drawn
            "ref_solved": [100.0] * 6,
        }
    )
    fig = final_scores_figure(finals, {"a": "C0", "b": "C1"})
    low, high = fig.axes[0].get_ylim()
    # The random line (the lowest thing drawn) clear of the frame: at least 8% of the height.
    assert (20.0 - low) / (high - low) > 0.08 and (high - 100.0) / (high - low) > 0.08


def test_the_performance_profile_draws_many_agents_bands_as_lines() -> None:
    import numpy as np
    import pandas as pd

    from rlbench.figures import performance_profile_figure

    def profile(agents):
        tau = np.linspace(0, 1.2, 5)
        return pd.DataFrame(
            [
                {"agent_key": a, "tau": t, "fraction": 0.5, "ci_low": 0.4, "ci_high": 0.6}
                for a in agents
                for t in tau
            ]
        )

    two = performance_profile_figure(profile("ab"), {"a": "C0", "b": "C1"})
    assert len(two.axes[0].collections) == 2  # a filled band each
    many = "abcd"
    four = performance_profile_figure(profile(many), {a: f"C{i}" for i, a in enumerate(many)})
    assert len(four.axes[0].collections) == 0
    # The CI bounds: dotted steps over τ (the reference lines are vertical, two points).
    bounds = [
        line
        for line in four.axes[0].lines
        if line.get_linestyle() == ":" and len(line.get_xdata()) > 2
    ]
    assert len(bounds) == 2 * len(many)
