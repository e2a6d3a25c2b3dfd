"""``mmal report``: statistics and plots of one experiment (HTML, Markdown + PNG, or JSON)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import MmalError, did_you_mean
from ..extras import require_extra
from .common import console, default_db

def check_output(path: Path) -> None:
    """Fail with one line, before any work, unless a file can be written at ``path``."""
    from .results import temporary_beside

    fd, probe = temporary_beside(path, not_regular="")
    os.close(fd)
    os.unlink(probe)
    if path.exists() and not os.access(path, os.W_OK):
        raise MmalError(f"--output {path}: the file is not writable")


def plot_folder(output: Path) -> Path:
    """Where a Markdown report's PNG files go: ``NAME_files/`` beside ``NAME.md``."""
    return output.with_name(output.stem + "_files")


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        db: str = typer.Option(None, "--db", help="Results database. Default: ./mmal-results.db or $MMAL_DB."),
        experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Experiment name or id (default: the newest)."),
        baseline: str = typer.Option("random", "--baseline", help="Strategy label every strategy is compared with."),
        alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the tests, in (0, 1)."),
        fmt_: str = typer.Option("html", "--format", "-f", help="html, md or json."),
        metric: str = typer.Option("accuracy", "--metric", "-m", help="Compare strategies by the AUBC of this registered metric (mmal list metrics), in its direction."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output; "
                                              "Markdown writes its plots to NAME_files/ beside it)."),
    ) -> None:
        """Learning curves, paired tests against a baseline, ranks across cells and modality use of one experiment."""
        from ..report.render import FORMATS

        if fmt_ not in FORMATS:
            raise MmalError(f"--format {fmt_}: expected one of {', '.join(FORMATS)}{did_you_mean(fmt_, FORMATS)}")
        if not (0.0 < alpha < 1.0):  # also false for nan
            raise MmalError(f"--alpha {alpha}: expected a significance level strictly between 0 and 1")
        if output is not None:
            check_output(output)
            if output.exists() and Path(default_db(db)).exists() and output.samefile(default_db(db)):
                raise MmalError(f"--output {output}: that is the results database; give another file")
            if fmt_ == "md" and plot_folder(output).exists() and not plot_folder(output).is_dir():
                raise MmalError(f"--output {output}: the plots go to {plot_folder(output)}, which is a file")
        require_extra("report", what="mmal report")
        from ..plugins import check_metric_path
        from ..report import build_report

        check_metric_path(metric, "--metric")
        from ..report.render import layout, to_html, to_json, to_markdown
        from ..store import Store
        from .results import write_atomically

        with Store(default_db(db), readonly=True) as store:
            eid = store.resolve_experiment(experiment)
            data = build_report(store, eid, baseline=baseline, alpha=alpha, metric=metric)
        title = f"mmal report: {data['experiment']['name']}"
        files: list[tuple[Path, bytes]] = []
        if fmt_ == "json":
            text = to_json(data)
        elif fmt_ == "html":
            text = to_html(layout(data), title)
        else:
            folder = plot_folder(output) if output is not None else None
            text, plots = to_markdown(layout(data, plots=output is not None), folder.name if folder else None)
            if folder is not None:
                files = [(folder / f"{p.name}.png", p.png) for p in plots]
        if output is None:
            typer.echo(text, nl=False)
            return
        if files:
            try:
                files[0][0].parent.mkdir(exist_ok=True)
            except OSError as err:
                raise MmalError(f"--output {output}: cannot create {files[0][0].parent} ({err.strerror or err})") from None
            for path, data_ in files:
                write_atomically(path, data_)
        write_atomically(output, text)
        console.print(f"wrote {output}" + (f" and {len(files)} plot(s) in {files[0][0].parent}" if files else ""))
