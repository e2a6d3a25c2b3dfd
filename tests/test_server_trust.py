"""A leaderboard that cannot be gamed: the red-team findings of issue 15, each as a test
(forged selections, resubmitted results, look-alike labels, oversized fields, private
pending/rejected submissions), verification in limited child processes (a hanging and a
crashing strategy), claims shared by many workers, the rate limit shared by many servers,
and upgrading a database of the first schema in place. On SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from sqlalchemy import Column, Float, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint  # noqa: E402
from sqlalchemy import create_engine, inspect  # noqa: E402

from mmal_core.plugins import PluginManager, reset_plugin_manager  # noqa: E402
from mmal_core.leaderboard.server.storage import SCHEMA_VERSION, ServerStore, migrate  # noqa: E402
from serverkit import BAD_STRATEGIES_SOURCE, api_client, write_plugin  # noqa: E402
from mmal_core.leaderboard.server.trust import label_key, result_key  # noqa: E402
from mmal_core.leaderboard.server.worker import JobLimits  # noqa: E402
from mmal_core.leaderboard.submission import source_hash  # noqa: E402


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _doc(doc, **strategy):
    doc = copy.deepcopy(doc)
    doc["strategy"].update(strategy)
    return doc


def _wait_final(client, token, ids, timeout=300.0):
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        states = {i: client.get(f"/api/submissions/{i}", headers=_auth(token)).json() for i in ids}
        if all(s["status"] in ("verified", "rejected") for s in states.values()):
            return states
        time.sleep(0.3)
    raise AssertionError(f"not all finished within {timeout} s: {states}")


def _mark_verified(store, sid, doc):
    replayed = [{"seed": run["seed"], "n_labeled": [r["n_labeled"] for r in run["rounds"]],
                 "metrics": [r["metrics"] for r in run["rounds"]]} for run in doc["runs"]]
    assert store.finish(sid, "verified", "", replayed, "reproduced: (not replayed in this test)")


@pytest.fixture
def api(server_db, tiny):
    with api_client(server_db, ("alice", "bob"), rate_limit=0, max_body=4 * 1024 * 1024) as client:
        client.rows = {t["name"]: t for t in client.store.list_tokens()}
        yield client


# -- finding 1: selections picked by hand are never ranked --------------------------------------------
def test_a_forged_selection_is_rejected_and_only_reproduced_ones_rank(server_db, tiny):
    forged = _doc(tiny["docs"]["random"], name="margin", label="margin")  # ids not chosen by margin
    with api_client(server_db, ("mallory", "alice"), rate_limit=0, verify=True,
                    limits=JobLimits(time_limit=300)) as client:
        bad = client.post("/api/submissions", json=forged, headers=_auth(client.tokens["mallory"])).json()["id"]
        good = client.post("/api/submissions", json=tiny["docs"]["margin"],
                           headers=_auth(client.tokens["alice"])).json()["id"]
        states = _wait_final(client, client.tokens["mallory"], [bad])
        states.update(_wait_final(client, client.tokens["alice"], [good]))
        assert states[bad]["status"] == "rejected"
        assert states[bad]["reason"].startswith("selection not reproduced: differs: at seed 0 round 0")
        assert states[good]["status"] == "verified" and states[good]["selection"].startswith("reproduced")
        board = client.get("/api/leaderboards/tiny-missing").json()
        assert [(r["strategy"], r["meta"]["submitter"]) for r in board["rows"]] == [("margin", "alice")]


def test_rows_verified_without_a_reproduced_selection_are_not_ranked(api, tiny):
    sid, _ = api.store.add_submission(api.rows["alice"], tiny["docs"]["margin"], 1)
    api.store.finish(sid, "verified", "", [], "not checked: an old server")  # e.g. from schema version 1
    assert api.get("/api/leaderboards/tiny-missing").json()["rows"] == []


# -- finding 3: first submitter wins ----------------------------------------------------------------------
def test_the_same_result_from_another_token_creates_no_row(api, tiny):
    doc = tiny["docs"]["margin"]
    first = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["alice"])).json()["id"]
    # while alice's is being verified, bob gets no row, and is not told whose it is
    resp = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["bob"]))
    assert resp.status_code == 409 and "alice" not in resp.text
    _mark_verified(api.store, first, doc)
    for copy_ in (doc, _doc(doc, label="margin-by-bob"), _doc(doc, label="totally new")):
        resp = api.post("/api/submissions", json=copy_, headers=_auth(api.tokens["bob"]))
        assert resp.status_code == 409, resp.text
        assert "first submitted by alice" in resp.json()["error"]
        assert resp.json()["first"] == {"id": first, "submitter": "alice", "strategy": "margin"}
    assert [r["id"] for r in api.store.submissions()] == [first]
    # other parameters are another result
    resp = api.post("/api/submissions", json=_doc(doc, params={"x": 1}, label="margin-x"),
                    headers=_auth(api.tokens["bob"]))
    assert resp.status_code == 202


def test_copies_sent_at_once_by_several_tokens_leave_one_submitter(server_db, tiny):
    names = tuple(f"user{i}" for i in range(6))
    with api_client(server_db, names, rate_limit=0) as client:
        answers, lock = [], threading.Lock()

        def send(name, i):
            resp = client.post("/api/submissions", json=_doc(tiny["docs"]["margin"], label=f"m-{name}-{i}"),
                               headers=_auth(client.tokens[name]))
            with lock:
                answers.append((name, resp.status_code))

        threads = [threading.Thread(target=send, args=(name, i)) for name in names for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = {name for name, code in answers if code == 202}
        assert len(winners) == 1, answers  # checking and storing a result is one step
        assert sorted(code for _, code in answers) == [202] * 2 + [409] * 10
        assert {r["submitter"] for r in client.store.submissions()} == winners


def test_two_copies_verified_at_once_keep_only_the_first(api, tiny):
    doc = tiny["docs"]["random"]
    a, _ = api.store.add_submission(api.rows["alice"], doc, 1)
    b, _ = api.store.add_submission(api.rows["alice"], _doc(doc, label="random again"), 1)
    _mark_verified(api.store, a, doc)
    api.store.finish(b, "verified", "", [], "reproduced: (not replayed in this test)")
    row = api.store.submission(b)
    assert row["status"] == "rejected" and f"first submitted by alice (submission {a})" in row["reason"]


@pytest.mark.parametrize("label", ["marg\u0456n", "MARGIN", "\uff4d\uff41\uff52\uff47\uff49\uff4e", "margın"],
                         ids=["cyrillic-i", "upper", "fullwidth", "dotless-i"])
def test_a_label_that_reads_like_another_is_refused(api, tiny, label):
    assert api.post("/api/submissions", json=tiny["docs"]["margin"],
                    headers=_auth(api.tokens["alice"])).status_code == 202
    resp = api.post("/api/submissions", json=_doc(tiny["docs"]["random"], label=label),
                    headers=_auth(api.tokens["bob"]))
    assert resp.status_code == 422, resp.text
    assert "strategy.label" in resp.json()["error"] and "reads like the label 'margin'" in resp.json()["error"]
    assert api.store.counts() == {"pending": 1}


def test_label_key_normalises_width_case_and_homoglyphs():
    assert label_key("marg\u0456n") == label_key("Margin") == label_key("\uff2d\uff41rgin") == "margin"
    assert label_key("margin-2") != label_key("margin")
    assert label_key("策略") == "策略"


def test_result_key_ignores_the_label_and_the_order_of_picks(tiny):
    doc = tiny["docs"]["margin"]
    shuffled = _doc(doc, label="other")
    shuffled["runs"][0]["rounds"][0]["queried_ids"].reverse()
    assert result_key(doc) == result_key(shuffled)
    assert result_key(doc) != result_key(tiny["docs"]["random"])


# -- finding 4: size limits -------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, field", [
    (lambda d: d["environment"].__setitem__("platform", "x" * 1_000_000), "environment"),
    (lambda d: d["environment"].update({f"k{i}": "v" for i in range(40)}), "environment"),
    (lambda d: d["strategy"].__setitem__("params", {"blob": "x" * 1_500_000}), "strategy.params"),
    (lambda d: d["strategy"].__setitem__("params", {"k" * 300: 1}), "strategy.params"),
    (lambda d: d["strategy"].__setitem__("label", "m" * 300), "strategy.label"),
    (lambda d: d["runs"][0]["rounds"][0]["metrics"].__setitem__("notes", "x" * 20_000), "runs[0].rounds[0].metrics"),
    (lambda d: d["runs"][0]["rounds"][0]["timings"].update({f"t{i}": 0.1 for i in range(40)}),
     "runs[0].rounds[0].timings"),
], ids=["env-1MB", "env-keys", "params-1.5MB", "params-key", "label", "metrics", "timings"])
def test_oversized_free_form_fields_are_a_422_naming_the_field(api, tiny, edit, field):
    doc = copy.deepcopy(tiny["docs"]["margin"])
    edit(doc)
    resp = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["alice"]))
    assert resp.status_code == 422, resp.text[:300]
    assert resp.json()["error"].startswith(f"submission: {field}") or f"{field}:" in resp.json()["error"]
    assert api.store.counts() == {}


# -- finding 4: privacy -----------------------------------------------------------------------------------
def test_pending_and_rejected_submissions_are_private_to_their_token(api, tiny):
    alice, bob = _auth(api.tokens["alice"]), _auth(api.tokens["bob"])
    pending = api.post("/api/submissions", json=tiny["docs"]["margin"], headers=alice).json()["id"]
    rejected, _ = api.store.add_submission(api.rows["alice"], tiny["docs"]["random"], 1)
    api.store.finish(rejected, "rejected", "seed 0 round 1: claimed accuracy 0.9 (secret)", None)
    for sid in (pending, rejected):
        for headers in ({}, bob, _auth("not-a-token")):
            for path in (f"/api/submissions/{sid}", f"/submissions/{sid}"):
                resp = api.get(path, headers=headers)
                assert resp.status_code == 404, (path, headers, resp.text[:200])
                assert "alice" not in resp.text and "secret" not in resp.text
        mine = api.get(f"/api/submissions/{sid}", headers=alice).json()
        assert mine["submitter"] == "alice"
        assert api.get(f"/submissions/{sid}", headers=alice).status_code == 200
    assert "secret" in api.get(f"/api/submissions/{rejected}", headers=alice).json()["reason"]
    page = api.get("/").text
    assert "alice" not in page and "rejected" not in page and "pending" not in page
    _mark_verified(api.store, pending, tiny["docs"]["margin"])
    public = api.get(f"/api/submissions/{pending}").json()
    assert public["status"] == "verified" and public["submitter"] == "alice"


# -- verification in limited child processes --------------------------------------------------------------
@pytest.fixture
def bad_strategies(tmp_path, tiny):
    """The hang and crash strategies installed for this process and the replay children."""
    site = write_plugin(tmp_path / "bad-site", BAD_STRATEGIES_SOURCE, "mmal-test-bad-strategies")
    sys.path.insert(0, str(site))
    previous = reset_plugin_manager(PluginManager())
    try:
        docs = {}
        for name in ("hang", "crash"):
            doc = _doc(tiny["docs"]["random"], name=name, label=name)
            doc["plugin"] = {"distribution": "mmal-test-bad-strategies", "version": "0.1",
                             "source_hash": source_hash(name)}
            docs[name] = doc
        yield docs
    finally:
        reset_plugin_manager(previous)
        sys.path.remove(str(site))
        sys.modules.pop("mmal_test_bad_strategies", None)


@pytest.mark.slow
def test_a_hanging_or_crashing_strategy_is_rejected_and_the_queue_drains(tmp_path, tiny, bad_strategies):
    # the limits are the worker's, whatever the database: SQLite only (a time limit is long)
    with api_client(tmp_path / "server.db", ("mallory", "alice"), rate_limit=0, verify=True,
                    limits=JobLimits(time_limit=25, memory_mb=4096)) as client:
        mallory, alice = _auth(client.tokens["mallory"]), _auth(client.tokens["alice"])
        hang = client.post("/api/submissions", json=bad_strategies["hang"], headers=mallory).json()["id"]
        crash = client.post("/api/submissions", json=bad_strategies["crash"], headers=mallory).json()["id"]
        honest = client.post("/api/submissions", json=tiny["docs"]["margin"], headers=alice).json()["id"]
        states = _wait_final(client, client.tokens["mallory"], [hang, crash])
        states.update(_wait_final(client, client.tokens["alice"], [honest]))
    assert states[hang]["status"] == "rejected"
    assert "exceeded the time limit of 25 s" in states[hang]["reason"]
    assert states[crash]["status"] == "rejected"
    assert "the replay process died (killed by signal 9" in states[crash]["reason"]
    assert states[honest]["status"] == "verified"


def test_a_job_that_killed_its_worker_twice_is_rejected(api, tiny):
    sid, _ = api.store.add_submission(api.rows["alice"], tiny["docs"]["margin"], 1)
    for attempt in (1, 2):  # each time the worker dies: its lease runs out
        job = api.store.claim_next(f"w{attempt}", lease=0.01)
        assert job["id"] == sid and job["attempt"] == attempt
        time.sleep(0.05)
    assert api.store.claim_next("w3") is None
    row = api.store.submission(sid)
    assert row["status"] == "rejected" and "stopped its worker 2 times" in row["reason"]


def test_the_verification_budget_of_a_token_is_a_429(server_db, tiny):
    with api_client(server_db, ("alice",), rate_limit=0, token_budget=100,
                    limits=JobLimits(time_limit=60)) as client:
        alice = _auth(client.tokens["alice"])
        assert client.post("/api/submissions", json=tiny["docs"]["margin"], headers=alice).status_code == 202
        resp = client.post("/api/submissions", json=tiny["docs"]["random"], headers=alice)  # 60 + 60 > 100
        assert resp.status_code == 429 and "verification budget" in resp.json()["error"]


# -- many workers, many servers ---------------------------------------------------------------------------
def test_each_job_is_claimed_by_exactly_one_worker(api, tiny):
    ids = []
    for i in range(12):
        doc = _doc(tiny["docs"]["random"], label=f"r{i}", params={"i": i})
        ids.append(api.store.add_submission(api.rows["alice"], doc, 1)[0])
    claims, lock = [], threading.Lock()

    def work(name):
        while (job := api.store.claim_next(name)) is not None:
            with lock:
                claims.append(job["id"])

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claims) == sorted(ids)  # every job once, none twice


def test_a_second_server_never_takes_a_running_job(api, tiny):
    sid, _ = api.store.add_submission(api.rows["alice"], tiny["docs"]["margin"], 1)
    other = ServerStore(api.store.url)
    try:
        assert api.store.claim_next("server-1", lease=30)["id"] == sid
        other.requeue_interrupted()  # what a (re)starting server does
        assert other.claim_next("server-2") is None
        assert api.store.renew(sid, "server-1") and not other.renew(sid, "server-2")
        assert not other.finish(sid, "rejected", "not mine", None, worker="server-2")
        assert api.store.submission(sid)["status"] == "verifying"
    finally:
        other.close()


def test_the_rate_limit_holds_across_server_processes(server_db, tiny):
    with api_client(server_db, ("alice",), rate_limit=3) as one:
        from fastapi.testclient import TestClient

        from mmal_core.leaderboard.server import create_app

        with TestClient(create_app(server_db, rate_limit=3, verify=False)) as two:
            alice = _auth(one.tokens["alice"])
            codes = [client.post("/api/submissions", json=_doc(tiny["docs"]["margin"], label=f"m{i}"),
                                 headers=alice).status_code for i, client in enumerate([one, two, one, two])]
    assert codes == [202, 202, 202, 429]


# -- schema versions ----------------------------------------------------------------------------------------
def _version_1_tables(metadata):
    """The tables as the first server (schema version 1) made them."""
    Table("tokens", metadata, Column("id", Integer, primary_key=True), Column("name", String(200), nullable=False),
          Column("token_hash", String(64), nullable=False, unique=True), Column("created_at", Float, nullable=False),
          Column("revoked_at", Float, nullable=True))
    Table("submissions", metadata, Column("id", Integer, primary_key=True),
          Column("token_id", Integer, ForeignKey("tokens.id"), nullable=False),
          Column("submitter", String(200), nullable=False), Column("benchmark_name", String(200), nullable=False),
          Column("benchmark_hash", String(16), nullable=False), Column("strategy_label", String(500), nullable=False),
          Column("status", String(16), nullable=False, index=True), Column("reason", Text, nullable=True),
          Column("document", Text, nullable=False), Column("document_hash", String(64), nullable=False, index=True),
          Column("replayed", Text, nullable=True), Column("selection", Text, nullable=True),
          Column("size", Integer, nullable=False), Column("created_at", Float, nullable=False),
          Column("started_at", Float, nullable=True), Column("finished_at", Float, nullable=True),
          UniqueConstraint("token_id", "document_hash"))


def test_a_version_1_database_is_upgraded_in_place(server_db, tiny):
    engine = create_engine(server_db)
    old = MetaData()
    _version_1_tables(old)
    old.create_all(engine)
    doc = tiny["docs"]["margin"]
    text = json.dumps(doc, sort_keys=True)
    with engine.begin() as conn:
        conn.execute(old.tables["tokens"].insert().values(name="alice", token_hash="h" * 64, created_at=1.0))
        for i, (status, selection) in enumerate([("verified", "reproduced: all"), ("verifying", None),
                                                 ("verified", "differs: at seed 0 round 0")]):
            conn.execute(old.tables["submissions"].insert().values(
                token_id=1, submitter="alice", benchmark_name="tiny-missing", benchmark_hash=doc["benchmark"]["hash"],
                strategy_label="margin", status=status, document=text, document_hash=f"{i}" * 64, replayed="[]",
                selection=selection, size=1, created_at=1.0 + i))
    engine.dispose()
    store = ServerStore(server_db)  # upgrades
    try:
        rows = {r["id"]: r for r in store.submissions()}
        assert [rows[i]["status"] for i in (1, 2, 3)] == ["verified", "verifying", "verified"]
        with store.engine.connect() as conn:
            keys = conn.exec_driver_sql("SELECT id, verified_key, result_key, label_key FROM submissions ORDER BY id").all()
            version = conn.exec_driver_sql("SELECT version FROM schema_info").scalar_one()
        assert version == SCHEMA_VERSION
        assert keys[0][1] == result_key(doc) and keys[2][1] is None and keys[2][2] == result_key(doc)
        assert keys[0][3] == "margin"
        store.requeue_interrupted()  # a job left verifying by a version-1 server goes back to the queue
        assert store.submission(2)["status"] == "pending"
        # the upgraded database has what a new one has
        upgraded = {t: {c["name"] for c in inspect(store.engine).get_columns(t)} for t in ("tokens", "submissions")}
        assert migrate(store.engine) == SCHEMA_VERSION  # idempotent
    finally:
        store.close()
    from mmal_core.leaderboard.server.storage import metadata

    assert upgraded == {t: {c.name for c in metadata.tables[t].columns} for t in ("tokens", "submissions")}


# -- `mmal serve worker` processes, killed in the middle of a replay ---------------------------------------------
@pytest.mark.slow
def test_a_killed_worker_process_hands_its_job_on_and_twice_rejects_it(tmp_path, tiny, bad_strategies):
    import os
    import signal
    import subprocess

    from serverkit import plugin_env

    url = f"sqlite:///{tmp_path / 'server.db'}"
    store = ServerStore(url)
    token = store.create_token("mallory")
    owner = store.authenticate(token)
    sid, _ = store.add_submission(owner, bad_strategies["hang"], 1)  # a replay that never ends by itself
    env = {**os.environ, **plugin_env(tmp_path / "bad-site")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "bad-site"), str(tiny["site"]), env["PYTHONPATH"]])

    def worker():
        return subprocess.Popen([sys.executable, "-m", "mmal_core", "serve", "worker", "--db", url, "--lease", "2",
                                 "--job-time-limit", "300"], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(tmp_path / "worker.log", "ab"))

    def wait_for(attempt, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                row = conn.exec_driver_sql(f"SELECT status, attempts FROM submissions WHERE id = {sid}").first()
            if row[0] in ("verified", "rejected") or (row[0] == "verifying" and row[1] >= attempt):
                return row
            time.sleep(0.2)
        raise AssertionError(f"attempt {attempt} did not start")

    procs = []
    try:
        for attempt in (1, 2):  # each worker claims the job, then dies by SIGKILL mid-replay
            procs.append(worker())
            assert tuple(wait_for(attempt)) == ("verifying", attempt)
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(30)
        procs.append(worker())
        deadline = time.monotonic() + 120
        while store.submission(sid)["status"] == "verifying" and time.monotonic() < deadline:
            time.sleep(0.2)
        row = store.submission(sid)
        assert row["status"] == "rejected" and "stopped its worker 2 times" in row["reason"], row
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        store.close()
