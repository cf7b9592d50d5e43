"""The measured sections of docs/benchmarks.md, generated from the shipped results bundles.

    python benchmarks/reference_page.py                   # print every bundle's section
    python benchmarks/reference_page.py --write docs/benchmarks.md --figures docs/benchmarks

Each section says how its bundle was produced (the command recorded in the runs'
provenance, the wall time from the first run's start to the last one's end, the commit and
versions, the protocol) and holds the report's final-score table, computed by the same code
as `rlbench report`. docs/benchmarks.md holds this output verbatim, and a test
(tests/test_benchmarks_page.py) regenerates it, so the page cannot drift from the files.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"
#: The shipped bundles, in the page's order.
BUNDLES = ("cartpole", "cartpole_pg", "pendulum")


def section(path: Path) -> str:
    """The Markdown section of one bundle: how it was produced, then its score table."""
    from rlbench import bundle
    from rlbench.report import collect
    from rlbench.report import formatting as fmt
    from rlbench.report.markdown import _score_rows

    data = bundle.read_bundle(path)
    runs = data["runs"]
    prov, config = runs[0]["provenance"], runs[0]["config"]
    commands = list(dict.fromkeys(_command(run["provenance"]["argv"]) for run in runs))
    dirty = any(run["provenance"]["git"].get("dirty") for run in runs)
    commit = prov["git"]["commit"][:7] + (" (working tree not clean)" if dirty else "")
    seeds = sorted({run["config"]["seed"] for run in runs})
    report = collect([path], n_resamples=10_000)
    header, rows, align = _score_rows(report)
    keep = [i for i, h in enumerate(header) if h != "not complete"]
    table = fmt.md_table(
        [header[i] for i in keep],
        [[r[i] for i in keep] for r in rows],
        "".join(align[i] for i in keep),
    )
    wall = data["span"]["wall_time_s"]
    relative = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return "\n".join(
        [
            f"- Results: `{relative}`, suite `{data['suite']['source_path']}`.",
            f"- Command: {' and '.join(f'`{c}`' for c in commands)}, then "
            f"`rlbench export RESULTS/{data['suite']['name']} --format rlbench --out {relative}`.",
            f"- Wall time: {_duration(wall)} from the first run's start to the last one's end "
            f"({data['span']['started_at']} to {data['span']['ended_at']}), on "
            f"{prov['cpu_count']} CPU cores ({prov['device_name']}), "
            f"{prov['torch_threads']} torch thread per run.",
            f"- Commit {commit}: rlbench {prov['rlbench']}, torch {prov['torch']}, "
            f"gymnasium {prov['gymnasium']}, Python {prov['python']}.",
            f"- Protocol: {config['steps']:,} environment steps; greedy evaluation every "
            f"{config['eval_interval']:,} steps, {config['eval_episodes']} episodes; the final "
            f"score of a run is its last evaluation's mean return; {len(seeds)} seeds "
            f"({seeds[0]}-{seeds[-1]}).",
            "",
            table,
            "",
        ]
    )


def _command(argv: list[str]) -> str:
    return "rlbench " + shlex.join(argv[1:])


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def write_figures(path: Path, folder: Path) -> list[Path]:
    """Write the bundle's learning curves (the report's figure) to ``folder`` as
    ``<suite>-learning_curves.svg``; returns the paths written."""
    import tempfile

    from rlbench.report import write_report

    folder.mkdir(parents=True, exist_ok=True)
    from rlbench import bundle

    name = bundle.name_of(path)
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        write_report([path], Path(scratch))
        for figure in ("learning_curves",):
            target = folder / f"{name}-{figure}.svg"
            shutil.copyfile(Path(scratch) / "figures" / f"{figure}.svg", target)
            written.append(target)
    return written


def generated_blocks(page: str) -> dict[str, str]:
    """The generated sections of ``page`` (the text between ``<!-- generated: NAME -->``
    and ``<!-- end generated: NAME -->``), by bundle name."""
    found = {}
    for match in re.finditer(
        r"<!-- generated: (\w+) -->\n(.*?)<!-- end generated: \1 -->", page, re.S
    ):
        found[match.group(1)] = match.group(2)
    return found


def fill(page: str, sections: dict[str, str]) -> str:
    """``page`` with each generated section replaced by ``sections[name]``."""
    for name, text in sections.items():
        page = re.sub(
            rf"(<!-- generated: {name} -->\n).*?(<!-- end generated: {name} -->)",
            lambda m, text=text: m.group(1) + text + m.group(2),
            page,
            flags=re.S,
        )
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="*", type=Path, help="default: the shipped bundles")
    parser.add_argument("--figures", type=Path, help="also write each bundle's figures here")
    parser.add_argument("--write", type=Path, help="fill this page's generated sections")
    args = parser.parse_args(argv)
    paths = args.bundles or [REFERENCE / f"{name}.rlbench.json" for name in BUNDLES]
    sections = {}
    from rlbench import bundle

    for path in paths:
        sections[bundle.name_of(path)] = section(path)
        if args.write is None:
            sys.stdout.write(sections[bundle.name_of(path)] + "\n")
        if args.figures:
            for written in write_figures(path, args.figures):
                print(f"wrote {written}", file=sys.stderr)
    if args.write is not None:
        args.write.write_text(fill(args.write.read_text(encoding="utf-8"), sections))
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
