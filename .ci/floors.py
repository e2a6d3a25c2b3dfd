"""Print a pip constraints file that pins every declared floor: `name>=X` becomes `name==X`.

Reads the root pyproject.toml and those of plugins/* and examples/* (dependencies and every
extra). A distribution whose floors differ between pyprojects is an error: one of them would
go untested, since the floors job installs everything into one environment.
Used by .ci/floors.sh; `--targets` prints the editable install arguments (each pyproject with
all its extras) instead.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pyprojects() -> list[Path]:
    return [ROOT / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml")),
            *sorted(ROOT.glob("examples/*/pyproject.toml"))]


def floors() -> dict[str, str]:
    found: dict[str, tuple[str, str]] = {}
    for path in pyprojects():
        project = tomllib.loads(path.read_text())["project"]
        reqs = list(project.get("dependencies", []))
        reqs += [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
        where = path.relative_to(ROOT).as_posix()
        for text in reqs:
            req = Requirement(text)
            lows = [s.version for s in req.specifier if s.operator == ">="]
            if not lows:
                continue
            name = canonicalize_name(req.name)
            if name in found and Version(found[name][0]) != Version(lows[0]):
                sys.exit(f"{where}: {name}>={lows[0]} but {found[name][1]} says {name}>={found[name][0]}; "
                         "declare one floor for it everywhere")
            found.setdefault(name, (lows[0], where))
    return {name: low for name, (low, _) in sorted(found.items())}


def targets() -> list[str]:
    out = []
    for path in pyprojects():
        if path.parent.parent.name == "examples":
            continue  # the tests import the example plugin from its folder (pyproject's pythonpath)
        extras = sorted(tomllib.loads(path.read_text())["project"].get("optional-dependencies", {}))
        folder = path.parent.relative_to(ROOT).as_posix() if path.parent != ROOT else "."
        out.append(f"{folder}[{','.join(extras)}]" if extras else folder)
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--targets"]:
        print("\n".join(targets()))
    else:
        print("\n".join(f"{name}=={low}" for name, low in floors().items()))
