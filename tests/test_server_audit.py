"""The leaderboard server under a careless or hostile submitter: malformed and oversized
JSON, wrong types, look-alike labels, labels that break the plots, odd ids and routes, a
locked database. Fast: no replays (the worker is off or fed documents that fail early)."""

from __future__ import annotations

import copy
import itertools
import json
import sqlite3
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from sqlalchemy.exc import OperationalError  # noqa: E402

from mmal_core.leaderboard.render import html_sections, learning_curve_png  # noqa: E402
from mmal_core.leaderboard.server.app import leaderboard_from_submissions, parse_json_body  # noqa: E402
from mmal_core.leaderboard.server.storage import ServerStore  # noqa: E402
from serverkit import api_client  # noqa: E402
from mmal_core.leaderboard.server.worker import VerificationWorker  # noqa: E402

EVIL = '<script>alert("pwned")</script>'


@pytest.fixture
def api(server_db, tiny):
    with api_client(server_db, ("alice", "bob", "carol"), rate_limit=0,
                    raise_server_exceptions=False) as client:
        yield client


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _labeled(doc, label):
    doc = copy.deepcopy(doc)
    doc["strategy"]["label"] = label
    return doc


def _replayed(doc, bump=0.0):
    return [{"seed": run["seed"], "n_labeled": [r["n_labeled"] for r in run["rounds"]],
             "metrics": [{"accuracy": min(r["metrics"]["accuracy"] + bump, 1.0)} for r in run["rounds"]]}
            for run in doc["runs"]]


_variants = itertools.count()


def _verified(store, token_row, doc, bump=0.0):
    """Store ``doc`` as verified without replaying it (the ranking side is under test); each
    call stores a distinct result (one result is verified only once)."""
    doc = copy.deepcopy(doc)
    doc["strategy"]["params"] = {"variant": next(_variants)}
    sid, _ = store.add_submission(token_row, doc, 1)
    store.finish(sid, "verified", "", _replayed(doc, bump), "reproduced: (not replayed in this test)")
    return sid


# -- JSON the standard does not allow, or that would exhaust the decoder -----------------------------------
@pytest.mark.parametrize("body, message", [
    (b"[" * 30_000 + b"]" * 30_000, "nested deeper than 64 levels"),  # was a 500 (RecursionError)
    (b'{"schema_version": 1, "x": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper than 64 levels"),
    (b'{"schema_version": 1, "x": NaN}', "NaN is not valid JSON"),  # json.loads accepted these
    (b'{"schema_version": 1, "x": -Infinity}', "-Infinity is not valid JSON"),
    (b'{"schema_version": 1, "x": 1e400}', "overflows a 64-bit float"),  # became inf
    (b'{"schema_version": 1, "x": 1' + b"0" * 5000 + b"}", "malformed JSON"),  # int digit limit
    (b"", "malformed JSON"),
], ids=["deep-30k", "deep-70", "nan", "minus-infinity", "1e400", "5000-digit-int", "empty"])
def test_non_standard_or_too_deep_json_is_a_400(api, body, message):
    resp = api.post("/api/submissions", content=body, headers=_auth(api.tokens["alice"]))
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]
    assert api.store.counts() == {}


def test_nan_in_a_real_document_is_refused_before_it_is_stored(api, tiny):
    text = json.dumps(tiny["docs"]["margin"]).replace('"train": ', '"train": NaN, "x": ', 1)
    resp = api.post("/api/submissions", content=text.encode(), headers=_auth(api.tokens["alice"]))
    assert resp.status_code == 400 and "NaN" in resp.json()["error"]
    assert parse_json_body(json.dumps(tiny["docs"]["margin"]).encode()) == tiny["docs"]["margin"]
    assert api.store.counts() == {}


def test_a_form_content_type_is_a_415_and_json_types_are_accepted(api, tiny):
    doc, alice = tiny["docs"]["margin"], _auth(api.tokens["alice"])
    resp = api.post("/api/submissions", content=json.dumps(doc),
                    headers={**alice, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415 and "application/json" in resp.json()["error"]
    assert api.store.counts() == {}
    resp = api.post("/api/submissions", content=json.dumps(doc),
                    headers={**alice, "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 202, resp.text


# -- wrong types and look-alike text ----------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (lambda d: d["runs"][0].__setitem__("seed", True), "runs[0].seed"),  # was silently seed 1
    (lambda d: d["runs"][0].__setitem__("initial_ids", [str(i) for i in d["runs"][0]["initial_ids"]]),
     "runs[0].initial_ids[0]"),  # was coerced to ints
    (lambda d: d["runs"][0]["rounds"][0].__setitem__("n_labeled", 8.5), "runs[0].rounds[0].n_labeled"),
    (lambda d: d["runs"][0]["rounds"][0].__setitem__("round", "0"), "runs[0].rounds[0].round"),
    (lambda d: d["strategy"].__setitem__("label", "   "), "strategy.label: leading or trailing whitespace"),
    (lambda d: d["strategy"].__setitem__("label", "margin "), "strategy.label: leading or trailing whitespace"),
    (lambda d: d["strategy"].__setitem__("label", "mar\u202egin"), "U+202E is not allowed"),  # bidi override
    (lambda d: d["strategy"].__setitem__("label", "mar\u200bgin"), "U+200B is not allowed"),  # zero width
    (lambda d: d["strategy"].__setitem__("label", "a\nb"), "U+000A is not allowed"),
    (lambda d: d["strategy"].__setitem__("name", "x\x00"), "strategy.name"),
    (lambda d: d["strategy"].__setitem__("params", []), "strategy.params"),
    (lambda d: d["runs"][0]["rounds"][0].__setitem__("metrics", [1]), "runs[0].rounds[0].metrics"),
    (lambda d: d["runs"][0]["rounds"][0].__setitem__("timings", {"train": "fast"}), "timings.train"),
    (lambda d: d["benchmark"].__setitem__("hash", "../../etc/passwd"), "benchmark.hash"),
], ids=lambda v: v if isinstance(v, str) else "edit")
def test_wrong_types_and_invisible_characters_are_422_naming_the_key(api, tiny, edit, message):
    doc = copy.deepcopy(tiny["docs"]["margin"])
    edit(doc)
    resp = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["alice"]))
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["error"]
    assert api.store.counts() == {}


@pytest.mark.parametrize("label", ["Ünïcödé 策略 🚀", "x'); DROP TABLE submissions;--", "../../etc/passwd",
                                   "$\\frac$", "_hidden", EVIL], ids=range(6))
def test_odd_but_visible_labels_are_stored_verbatim(api, tiny, label):
    resp = api.post("/api/submissions", json=_labeled(tiny["docs"]["margin"], label), headers=_auth(api.tokens["alice"]))
    assert resp.status_code == 202, resp.text
    assert api.get(resp.json()["status_url"], headers=_auth(api.tokens["alice"])).json()["strategy"] == label
    assert api.store.counts() == {"pending": 1}


# -- ids, routes and methods ---------------------------------------------------------------------------------
def test_out_of_range_ids_unknown_routes_and_methods_answer_json_errors(api):
    huge = "9" * 30
    resp = api.get(f"/api/submissions/{huge}")  # was a 500: OverflowError binding the id
    assert resp.status_code == 404 and resp.json()["error"] == f"no submission {huge}"
    assert api.get(f"/submissions/{huge}").status_code == 404
    assert api.get("/api/submissions/-1").status_code == 404
    resp = api.get("/api/submissions/abc")
    assert resp.status_code == 422 and "submission_id" in resp.json()["error"]
    for method, path, status in [("GET", "/nope", 404), ("DELETE", "/api/submissions/1", 405),
                                 ("PUT", "/api/submissions", 405), ("GET", "/api/submissions", 405),
                                 ("GET", "/api/leaderboards/..%2F..%2Fetc", 404)]:
        resp = api.request(method, path)
        assert resp.status_code == status and "error" in resp.json(), (method, path, resp.text)


def test_a_token_in_the_query_string_is_not_a_token(api, tiny):
    resp = api.post(f"/api/submissions?token={api.tokens['alice']}", json=tiny["docs"]["margin"])
    assert resp.status_code == 401 and "missing bearer token" in resp.json()["error"]
    resp = api.post("/api/submissions", json=tiny["docs"]["margin"], headers={"Authorization": api.tokens["alice"]})
    assert resp.status_code == 401
    assert api.store.counts() == {}


def test_concurrent_identical_submissions_store_one(api, tiny):
    doc, results = tiny["docs"]["margin"], []

    def send():
        results.append(api.post("/api/submissions", json=doc, headers=_auth(api.tokens["alice"])))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in results] == [202] * 8
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(not r.json()["duplicate"] for r in results) == 1
    assert api.store.counts() == {"pending": 1}


# -- the ranking side ---------------------------------------------------------------------------------------------
def test_a_label_posing_as_another_submitters_row_gets_its_own_row(tmp_path, tiny):
    store = ServerStore(f"sqlite:///{tmp_path / 'server.db'}")
    for name in ("alice", "bob", "carol"):
        store.create_token(name)
    rows = {t["name"]: t for t in store.list_tokens()}
    m, r = tiny["docs"]["margin"], tiny["docs"]["random"]
    alice = _verified(store, rows["alice"], _labeled(m, "margin"), bump=0.0)
    _verified(store, rows["carol"], _labeled(r, "margin"))
    # bob's label is exactly the row name alice's gets: it used to replace alice's seeds
    bob = _verified(store, rows["bob"], _labeled(r, "margin [alice]"))
    table = leaderboard_from_submissions(store.submissions(with_replayed=True), "tiny-missing")["benchmarks"][0]
    by_name = {row["strategy"]: row["meta"]["submission"] for row in table["rows"]}
    assert by_name["margin [alice]"] == alice
    assert by_name[f"margin [alice] (#{bob})"] == bob
    assert len(by_name) == 3
    store.close()


def test_labels_matplotlib_would_parse_do_not_break_the_page(api, tiny):
    tok = {t["name"]: t for t in api.store.list_tokens()}
    for i, label in enumerate(["$\\frac$", "_hidden", "a $ b", EVIL]):
        _verified(api.store, tok["alice"], _labeled(tiny["docs"]["margin"], label), bump=0.001 * i)
    page = api.get("/")
    assert page.status_code == 200, page.text[:300]  # "$\frac$" made every request of / a 500
    assert "<script" not in page.text and "&lt;script&gt;" in page.text
    assert "$\\frac$" in page.text and "_hidden" in page.text
    board = api.get("/api/leaderboards/tiny-missing").json()
    assert len(board["rows"]) == 4
    lb = leaderboard_from_submissions(api.store.submissions(with_replayed=True))
    assert learning_curve_png(lb["benchmarks"][0]) and "data:image/png" in html_sections(lb)


# -- a locked database ------------------------------------------------------------------------------------------
def _locked(*_args, **_kwargs):
    raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))


def test_a_locked_database_is_a_503_with_retry_after(api, tiny, monkeypatch):
    monkeypatch.setattr(api.store, "add_submission", _locked)
    resp = api.post("/api/submissions", json=tiny["docs"]["margin"], headers=_auth(api.tokens["alice"]))
    assert resp.status_code == 503 and resp.headers["retry-after"]
    assert "database is busy" in resp.json()["error"]
    monkeypatch.setattr(api.store, "submission", _locked)
    assert api.get("/api/submissions/1").status_code == 503


def test_the_worker_survives_a_locked_database_and_records_the_verdict(tmp_path, tiny, monkeypatch):
    store = ServerStore(f"sqlite:///{tmp_path / 'server.db'}")
    store.create_token("alice")
    token = store.list_tokens()[0]
    doc = copy.deepcopy(tiny["docs"]["margin"])
    doc["benchmark"]["hash"] = "0123456789abcdef"  # rejected at once, no replay
    sid, _ = store.add_submission(token, doc, 1)
    failures = {"claim_next": 2, "finish": 2}
    for name in failures:
        real = getattr(store, name)

        def flaky(*args, _real=real, _name=name, **kwargs):
            if failures[_name] > 0:
                failures[_name] -= 1
                _locked()
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, flaky)
    worker = VerificationWorker(store, poll_seconds=0.01)
    worker.start()
    try:
        for _ in range(500):
            if store.submission(sid)["status"] == "rejected":
                break
            threading.Event().wait(0.02)
        assert worker._thread.is_alive()  # the thread used to die on the first OperationalError
    finally:
        worker.stop()
    row = store.submission(sid)
    assert row["status"] == "rejected" and "unknown benchmark hash" in row["reason"]
    assert failures == {"claim_next": 0, "finish": 0}
    store.close()
