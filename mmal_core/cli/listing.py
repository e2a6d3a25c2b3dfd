"""``mmal list``: what is installed."""

from __future__ import annotations

import typer
from rich.table import Table

from ..errors import MmalError, did_you_mean
from ..plugins import KINDS, PLURAL, get_plugin_manager
from .common import console

CHOICES = [PLURAL[k] for k in KINDS] + ["plugins"]


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_(what: str = typer.Argument("all", help=f"One of: {', '.join(CHOICES)}, all.")) -> None:
        """List installed datasets, strategies, models, encoders, metrics, benchmarks or plugins."""
        if what not in CHOICES + ["all"]:
            raise MmalError(f"list: unknown kind '{what}'{did_you_mean(what, CHOICES)}; expected one of {', '.join(CHOICES)}, all")
        pm = get_plugin_manager()
        pm.load()
        kinds = [k for k in KINDS if what in ("all", PLURAL[k])]
        for kind in kinds:
            try:
                entries = pm.entries(kind)
            except MmalError as err:
                console.print(f"[red]{PLURAL[kind]}: {err}[/]")
                continue
            if what == "all" and not entries:
                continue
            table = Table(title=PLURAL[kind])
            table.add_column("name", style="bold")
            table.add_column("summary")
            table.add_column("distribution")
            for name in sorted(entries):
                e = entries[name]
                summary = e.summary
                if kind == "metric":
                    summary += f" ({'higher' if e.obj.higher_is_better else 'lower'} is better)"
                table.add_row(name, summary, f"{e.dist} {e.version}")
            console.print(table)
        if what in ("all", "plugins"):
            table = Table(title="plugins")
            for col in ("plugin", "distribution", "version", "module", "hooks", "status"):
                table.add_column(col)
            for info in sorted(pm.plugins.values(), key=lambda p: p.name):
                status = "[green]ok[/]" if info.ok else f"[red]failed: {info.error}[/]"
                table.add_row(info.name, info.dist, info.version, info.module, "\n".join(info.hooks), status)
            console.print(table)
