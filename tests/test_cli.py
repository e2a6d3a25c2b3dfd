"""The CLI end to end: run/show/export/list, and every bad input -> one line, exit 2, DB untouched."""

import json
import os

import pytest

from _support import digest, tiny_config


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    """A database holding one finished tiny experiment (built once for this module)."""
    import yaml

    from _support import run_cli

    folder = tmp_path_factory.mktemp("cli")
    cfg = folder / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()))
    db = folder / "results.db"
    res = run_cli("run", str(cfg), "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert "final accuracy" in res.stdout and "margin" in res.stdout
    return db


def test_version(cli):
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("mmal ")


def test_list_kinds(cli):
    res = cli("list", "strategies")
    assert res.returncode == 0
    for name in ("random", "least_confidence", "margin", "entropy"):
        assert name in res.stdout
    res = cli("list", "datasets")
    assert "synthetic-interaction" in res.stdout
    res = cli("list", "strategys")
    assert res.returncode == 2 and "did you mean 'strategies'" in res.stderr


def test_show_and_export(cli, results_db, tmp_path):
    shown = cli("show", "--db", str(results_db))
    assert shown.returncode == 0 and "AUBC" in shown.stdout and "random" in shown.stdout
    per_mod = cli("show", "--db", str(results_db), "--metric", "modality_accuracy.m0")
    assert per_mod.returncode == 0 and "modality_accuracy.m0" in per_mod.stdout
    out = tmp_path / "x.json"
    exported = cli("export", "--db", str(results_db), "--format", "json", "-o", str(out))
    assert exported.returncode == 0
    doc = json.loads(out.read_text())
    assert len(doc["runs"]) == 2 and len(doc["runs"][0]["rounds"]) == 4
    assert doc["runs"][0]["rounds"][0]["queried_ids"]
    assert "torch" in doc["experiment"]["environment"]
    csv = cli("export", "--db", str(results_db), "--format", "csv")
    header = csv.stdout.splitlines()[0]
    assert "metric.accuracy" in header and "queried_ids" in header and len(csv.stdout.splitlines()) == 9


def test_resume_message_and_no_rework(cli, results_db, tmp_path, write_config):
    again = cli("run", str(write_config(tiny_config())), "--db", str(results_db))
    assert again.returncode == 0
    import sqlite3

    with sqlite3.connect(results_db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 8


BAD_CONFIGS = [
    ("name: x\nbudget: [\n", "malformed YAML"),
    (tiny_config(budgett={"initial": 1}), "budgett: unknown key"),
    (tiny_config(strategies=["margn"]), "unknown strategy 'margn' (did you mean 'margin'?)"),
    (tiny_config(dataset={"name": "synthetic-dificulty"}), "did you mean 'synthetic-difficulty'"),
    (tiny_config(model={"name": "fusion-mlp", "params": {"fusion": "maxpool"}}), "parameter 'fusion'"),
    (tiny_config(model={"name": "fusion-mlp", "params": {"epoch": 3}}), "unknown parameter 'epoch' (did you mean 'epochs'?)"),
    (tiny_config(budget={"initial": 200, "per_round": 50, "rounds": 3}), "labels 350 samples but dataset 'synthetic-difficulty' has a pool of 300"),
    (tiny_config(dataset={"name": "synthetic-missing", "params": {"missing_rate": [-0.1, 0.2]}}), "missing_rate"),
    (tiny_config(dataset={"name": "synthetic-missing", "params": {"missing_rate": [0.1, 1.5]}}), "missing_rate"),
    (tiny_config(seeds=-1), "seeds"),
]


@pytest.mark.parametrize("cfg, expected", BAD_CONFIGS)
def test_bad_config_one_line_exit_2_db_untouched(cli, results_db, write_config, cfg, expected):
    path = write_config(cfg)
    before = digest(results_db)
    res = cli("run", str(path), "--db", str(results_db))
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert expected in err
    assert str(path) in err or "config" in err
    assert digest(results_db) == before


@pytest.mark.parametrize(
    "defect, expected",
    [
        ("nan", "NaN or inf"),
        ("inf", "NaN or inf"),
        ("labels", "labels must lie in [0, 2)"),
        ("all-missing", "modality 'b': the modality is missing in every sample"),
    ],
)
def test_bad_dataset_contents(cli, fixture_plugins_path, write_config, tmp_path, defect, expected):
    env = {"PYTHONPATH": str(fixture_plugins_path), "MMAL_DISABLE_PLUGINS": "fixture-clash"}
    cfg = tiny_config(dataset={"name": "fixture-defective", "params": {"defect": defect}})
    db = tmp_path / "d.db"
    res = cli("run", str(write_config(cfg)), "--db", str(db), env_extra=env)
    assert res.returncode == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and expected in err and "fixture-defective" in err
    assert not db.exists()


def test_unwritable_database_path(cli, write_config, tmp_path):
    res = cli("run", str(write_config(tiny_config())), "--db", str(tmp_path / "missing-folder" / "r.db"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a directory as the file instead
            target = tmp_path
        else:
            target = locked / "r.db"
        res = cli("run", str(write_config(tiny_config())), "--db", str(target))
        assert res.returncode == 2 and "--db" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    finally:
        locked.chmod(0o700)


def test_not_a_results_database(cli, tmp_path, write_config):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    before = digest(junk)
    res = cli("run", str(write_config(tiny_config())), "--db", str(junk))
    assert res.returncode == 2 and "not an mmal results database" in res.stderr
    assert digest(junk) == before
    res = cli("show", "--db", str(tmp_path / "none.db"))
    assert res.returncode == 2 and "no results database" in res.stderr


def test_show_unknown_metric_and_experiment(cli, results_db):
    res = cli("show", "--db", str(results_db), "--metric", "acuracy")
    assert res.returncode == 2 and "did you mean 'accuracy'" in res.stderr
    res = cli("show", "--db", str(results_db), "--experiment", "tinny")
    assert res.returncode == 2 and "did you mean 'tiny'" in res.stderr
    res = cli("export", "--db", str(results_db), "--format", "xml")
    assert res.returncode == 2 and "expected json or csv" in res.stderr


def test_progress_shows_a_bounded_number_of_run_bars_and_counts_every_round():
    """A lockstep group has dozens of runs in progress: RUN_BARS of them get a bar, the runs
    bar says how many are in progress, a finished run's bar goes to the next one waiting,
    and the rounds bar counts resumed and new rounds once each."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from mmal_core.cli.run import RUN_BARS, _ProgressCallbacks
    from mmal_core.config import parse_config
    from mmal_core.loop import RunOutcome, run_specs
    from mmal_core.store import RoundRecord

    specs = run_specs(parse_config(tiny_config(strategies=["random", "margin", "entropy", "least_confidence"],
                                               seeds=[0, 1, 2])))
    assert len(specs) == 12 > RUN_BARS
    rounds = len(specs[0].budget.schedule) + 1
    progress = Progress(console=Console(file=io.StringIO()), auto_refresh=False)
    bars = _ProgressCallbacks(progress, specs)
    task = {t.id: t for t in progress.tasks}

    def visible():
        return [t.description for t in progress.tasks if t.visible and t.id not in (bars.runs, bars.rounds)]

    for i, spec in enumerate(specs):
        bars.run_started(spec, rounds, 2 if i == 0 else 0)  # the first run resumes after 2 rounds
    assert visible() == [s.label for s in specs[:RUN_BARS]]
    assert task[bars.runs].description == "runs (12 in progress)"
    assert task[bars.rounds].total == 12 * rounds and task[bars.rounds].completed == 2
    for spec in specs:
        bars.round_finished(spec, RoundRecord(2 if spec is specs[0] else 0, 10, {}, [], {}))
    assert task[bars.rounds].completed == 3 + 11
    bars.run_started(specs[0], rounds, 3)  # a retried attempt reports what is committed: nothing new
    assert task[bars.rounds].completed == 14
    # the first run finishes: its bar goes to the first run that had none
    bars.run_finished(RunOutcome(specs[0], 1, "finished", n_labeled=[10] * rounds))
    assert visible() == [s.label for s in specs[1 : RUN_BARS + 1]]
    assert task[bars.rounds].completed == 14 + rounds - 3 and task[bars.runs].completed == 1
    # a failed run keeps only its committed rounds on the rounds bar
    bars.run_finished(RunOutcome(specs[1], 2, "failed", n_labeled=[10]))
    assert task[bars.rounds].completed == 14 + rounds - 3
    for spec in specs[2:6]:
        bars.run_finished(RunOutcome(spec, 3, "finished", n_labeled=[10] * rounds))
    assert visible() == [s.label for s in specs[6:]] and task[bars.runs].description == "runs"
