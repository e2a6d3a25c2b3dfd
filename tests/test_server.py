"""The leaderboard server: schema, tokens, limits, verification by replay, pages, a real
uvicorn process, and a SIGKILL in the middle of a burst of submissions."""

from __future__ import annotations

import copy
import http.client
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from mmal_core import MmalError  # noqa: E402
from mmal_core.leaderboard.server import create_app  # noqa: E402
from mmal_core.leaderboard.server.storage import ServerStore, hash_token  # noqa: E402
from serverkit import SHARED_REPLAY_CACHE, ServerProcess, api_client, plugin_env  # noqa: E402
from mmal_core.leaderboard.submission import parse_submission, verify_submission  # noqa: E402
from _support import cli_in_process  # noqa: E402

EVIL = '<script>alert("pwned")</script>'


@pytest.fixture(scope="module")
def cache():
    return SHARED_REPLAY_CACHE


def _tampered(doc, seed=1, rnd=2, delta=0.05):
    doc = copy.deepcopy(doc)
    doc["runs"][seed]["rounds"][rnd]["metrics"]["accuracy"] += delta
    return doc


def _wait_final(get_status, ids, timeout=240.0):
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        states = {i: get_status(i) for i in ids}
        if all(s in ("verified", "rejected") for s in states.values()):
            return states
        time.sleep(0.3)
    raise AssertionError(f"not all verified within {timeout} s: {states}")


# -- the document and its replay -------------------------------------------------------------------------
def test_the_built_document_follows_the_schema(tiny):
    doc = tiny["docs"]["margin"]
    parsed = parse_submission(doc)
    assert parsed.benchmark.name == "tiny-missing" and len(parsed.benchmark.hash) == 16
    assert parsed.strategy.name == "margin"
    assert parsed.plugin.distribution == "mmal-strategies" and len(parsed.plugin.source_hash) == 64
    assert parsed.environment.python and parsed.environment.mmal and parsed.environment.torch
    assert [r.seed for r in parsed.runs] == [0, 1]
    first = parsed.runs[0].rounds
    assert [r.n_labeled for r in first] == [8, 16, 24]
    assert [len(r.queried_ids) for r in first] == [8, 8, 0]
    assert "train" in first[0].timings and "accuracy" in first[0].metrics


def test_replay_reproduces_the_run_exactly(tiny, cache):
    for name in ("margin", "random"):
        doc = tiny["docs"][name]
        verdict = verify_submission(parse_submission(doc), cache)
        assert verdict.status == "verified", verdict.reason
        assert verdict.selection.startswith("reproduced: the server's copy of the strategy queried the claimed ids")
        for claimed, replayed in zip(doc["runs"], verdict.replayed):
            assert replayed["seed"] == claimed["seed"]
            assert [m["accuracy"] for m in replayed["metrics"]] == [r["metrics"]["accuracy"] for r in claimed["rounds"]]
            assert [m["macro_f1"] for m in replayed["metrics"]] == [r["metrics"]["macro_f1"] for r in claimed["rounds"]]


def test_selection_replay_reports_a_strategy_that_did_not_make_the_queries(tiny, cache):
    doc = copy.deepcopy(tiny["docs"]["random"])
    doc["strategy"].update(name="entropy", label="entropy")  # claims entropy, but random chose the ids
    verdict = verify_submission(parse_submission(doc), cache, require_selection=False)
    assert verdict.status == "verified"  # model and metrics are right for these labeled sets
    assert verdict.selection.startswith("differs: at seed 0 round 0")
    # a leaderboard requires the selection to be reproduced: rejected, naming the first round
    verdict = verify_submission(parse_submission(doc), cache)
    assert verdict.status == "rejected"
    assert verdict.reason.startswith("selection not reproduced: differs: at seed 0 round 0")
    doc = copy.deepcopy(tiny["docs"]["random"])
    doc["plugin"]["source_hash"] = "0" * 64
    verdict = verify_submission(parse_submission(doc), cache)
    assert verdict.status == "rejected"
    assert verdict.reason.startswith("selection not reproduced: not checked: the source of mmal-strategies")


@pytest.mark.parametrize("edit, reason", [
    (lambda d: d["runs"][1]["rounds"][2]["metrics"].__setitem__("accuracy", d["runs"][1]["rounds"][2]["metrics"]["accuracy"] + 0.05),
     "seed 1 round 2: claimed accuracy"),
    (lambda d: d["runs"][0]["rounds"][1]["metrics"].__setitem__("macro_f1", 0.99), "seed 0 round 1: claimed macro_f1"),
    (lambda d: d["runs"][0]["rounds"][0]["queried_ids"].__setitem__(0, 10**9), "not in the pool"),
    (lambda d: d["runs"][0]["rounds"][0]["queried_ids"].__setitem__(1, d["runs"][0]["rounds"][0]["queried_ids"][0]),
     "duplicates"),
    (lambda d: d["runs"][0]["rounds"][0]["queried_ids"].__setitem__(0, d["runs"][0]["initial_ids"][0]), "already labeled"),
    (lambda d: d["runs"][0]["rounds"][0]["queried_ids"].pop(), "7 queried ids, the schedule buys 8"),
    (lambda d: d["runs"][0]["rounds"][1].__setitem__("n_labeled", 17), "n_labeled 17"),
    (lambda d: d["runs"][0]["rounds"].pop(), "2 rounds, benchmark 'tiny-missing' has 3"),
    (lambda d: d["runs"][0]["initial_ids"].reverse() or d["runs"][0]["initial_ids"].__setitem__(0, -5),
     "initial_ids are not the benchmark's initial set"),
    (lambda d: d["runs"].pop(), "needs exactly the seeds [0, 1]"),
    (lambda d: d["benchmark"].__setitem__("hash", "0123456789abcdef"), "unknown benchmark hash 0123456789abcdef"),
    (lambda d: d["benchmark"].__setitem__("name", "synthetic-missing"), "is 'tiny-missing', not 'synthetic-missing'"),
    (lambda d: d["runs"][0]["rounds"][0]["metrics"].pop("accuracy"), "metric 'accuracy' is missing"),
    (lambda d: d["runs"][0]["rounds"][0]["metrics"].__setitem__("accuracy", float("nan")),
     "metric 'accuracy' is missing or not a finite number"),
])
def test_tampered_claims_are_rejected_with_the_reason(tiny, cache, edit, reason):
    doc = copy.deepcopy(tiny["docs"]["margin"])
    edit(doc)
    verdict = verify_submission(parse_submission(doc), cache)
    assert verdict.status == "rejected"
    assert reason in verdict.reason


def test_schema_errors_name_the_key():
    with pytest.raises(MmalError, match="schema_version 2 is not supported; this mmal reads version 1"):
        parse_submission({"schema_version": 2})
    with pytest.raises(MmalError, match="schema_version: required key is missing"):
        parse_submission({"benchmark": {}})
    with pytest.raises(MmalError, match="expected a JSON object"):
        parse_submission([1, 2])


# -- the HTTP API in process -------------------------------------------------------------------------------------
@pytest.fixture
def api(server_db, tiny):
    # a small rate limit for the "burst" test; the other tests stay far below it per token
    with api_client(server_db, ("alice", "bob", "burst"), rate_limit=5) as client:
        yield client


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_stored_hashed(api):
    with api.store.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM tokens")]
    assert sorted(stored) == sorted(hash_token(t) for t in api.tokens.values())
    assert not set(stored) & set(api.tokens.values())


def test_a_valid_submission_is_accepted_with_a_status_url(api, tiny):
    resp = api.post("/api/submissions", json=tiny["docs"]["margin"], headers=_auth(api.tokens["alice"]))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "pending" and resp.headers["location"] == body["status_url"]
    status = api.get(body["status_url"], headers=_auth(api.tokens["alice"])).json()
    assert status["status"] == "pending" and status["submitter"] == "alice"
    assert status["benchmark"]["name"] == "tiny-missing"
    assert api.get("/api/submissions/999").status_code == 404
    assert api.get("/api/submissions/abc").status_code == 422
    assert api.get("/api/leaderboards/nosuch").status_code == 404
    schema = api.get("/api/schema").json()
    assert schema["properties"]["schema_version"]["const"] == 1 and "runs" in schema["required"]
    benches = {b["name"]: b for b in api.get("/api/benchmarks").json()}
    assert benches["tiny-missing"]["hash"] == tiny["docs"]["margin"]["benchmark"]["hash"]


def test_refused_requests_change_nothing(api, tiny):
    doc = tiny["docs"]["margin"]
    api.app.state.limiter.limit = 0  # every case below is an attempt of the same token
    alice = _auth(api.tokens["alice"])
    cases = [
        (api.post("/api/submissions", json=doc), 401, "missing bearer token"),
        (api.post("/api/submissions", json=doc, headers=_auth("not-a-token")), 401, "invalid or revoked token"),
        (api.post("/api/submissions", content=b'{"schema_version": 1, "benchmark": ', headers=alice), 400, "malformed JSON"),
        (api.post("/api/submissions", content=b"\xff\xfe", headers=alice), 400, "malformed JSON"),
        (api.post("/api/submissions", json={**doc, "schema_version": 2}, headers=alice), 422,
         "schema_version 2 is not supported"),
        (api.post("/api/submissions", json={k: v for k, v in doc.items() if k != "plugin"}, headers=alice), 422,
         "plugin: required key is missing"),
        (api.post("/api/submissions", json={**doc, "extra": 1}, headers=alice), 422, "extra: unknown key"),
        (api.post("/api/submissions", json={**doc, "runs": [{**doc["runs"][0], "seed": "zero"}]}, headers=alice), 422,
         "runs[0].seed"),
        (api.post("/api/submissions", json={**doc, "padding": "x" * 70_000}, headers=alice), 413, "larger than the limit"),
        # no Content-Length: the body is streamed and cut off at the limit
        (api.post("/api/submissions", content=iter([b"{" + b" " * 40_000] * 2), headers=alice), 413,
         "larger than the limit"),
    ]
    for resp, status, message in cases:
        assert resp.status_code == status, (status, resp.text)
        assert message in resp.json()["error"]
    assert api.store.counts() == {}

    api.store.revoke_token("bob")
    resp = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["bob"]))
    assert resp.status_code == 401 and "revoked" in resp.json()["error"]
    assert api.store.counts() == {}


def test_sending_the_same_document_again_is_safe(api, tiny):
    doc = tiny["docs"]["random"]
    first = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["alice"])).json()
    again = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["alice"]))
    assert again.status_code == 202
    assert again.json()["id"] == first["id"] and again.json()["duplicate"] is True and not first["duplicate"]
    other = api.post("/api/submissions", json=doc, headers=_auth(api.tokens["bob"]))
    assert other.status_code == 409  # alice sent this result first
    assert api.store.counts() == {"pending": 1}


def test_rate_limit_per_token(api, tiny):
    def doc(i):
        d = copy.deepcopy(tiny["docs"]["random"])
        d["strategy"]["label"] = f"random-{i}"
        return d

    codes = [api.post("/api/submissions", json=doc(i), headers=_auth(api.tokens["burst"])).status_code
             for i in range(7)]
    assert codes == [202] * 5 + [429] * 2
    resp = api.post("/api/submissions", json=doc(8), headers=_auth(api.tokens["burst"]))
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
    assert "at most 5 submissions per minute" in resp.json()["error"]
    # other tokens are not affected
    assert api.post("/api/submissions", json=tiny["docs"]["margin"], headers=_auth(api.tokens["alice"])).status_code == 202
    assert api.store.counts() == {"pending": 6}


def test_worker_verifies_ranks_and_pages_escape_user_strings(server_db, tiny):
    url = server_db
    store = ServerStore(url)
    token = store.create_token(EVIL)
    store.close()
    evil = copy.deepcopy(tiny["docs"]["margin"])
    evil["strategy"]["label"] = EVIL
    app = create_app(url, rate_limit=0)
    with TestClient(app) as client:
        ids = []
        for doc in (evil, tiny["docs"]["random"], _tampered(tiny["docs"]["random"])):
            resp = client.post("/api/submissions", json=doc, headers=_auth(token))
            assert resp.status_code == 202
            ids.append(resp.json()["id"])
        states = _wait_final(lambda i: client.get(f"/api/submissions/{i}", headers=_auth(token)).json()["status"], ids)
        assert [states[i] for i in ids] == ["verified", "verified", "rejected"]
        assert "claimed accuracy" in client.get(f"/api/submissions/{ids[2]}", headers=_auth(token)).json()["reason"]

        board = client.get("/api/leaderboards/tiny-missing").json()
        assert sorted(r["strategy"] for r in board["rows"]) == sorted([EVIL, "random"])  # the rejected one is not ranked
        assert all(len(r["seeds"]) == 2 for r in board["rows"])

        page = client.get("/")
        assert page.status_code == 200 and "script-src" not in page.headers["content-security-policy"]
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "<script" not in page.text and "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page.text
        assert 'class="leaderboard"' in page.text and "data:image/png;base64," in page.text
        detail = client.get(f"/submissions/{ids[0]}")
        assert detail.status_code == 200 and "<script" not in detail.text and "&lt;script&gt;" in detail.text
        assert "same source as the submission" in detail.text and "reproduced:" in detail.text
        assert client.get(f"/api/submissions/{ids[1]}").json()["selection"].startswith("reproduced")
        assert client.get("/submissions/12345").status_code == 404


# -- a real uvicorn process ---------------------------------------------------------------------------------------
def _post(url, doc, token, timeout=30):
    req = urllib.request.Request(f"{url}/api/submissions", data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _status(url, sid, token):
    req = urllib.request.Request(f"{url}/api/submissions/{sid}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["status"]


def test_submit_verify_rank_against_a_real_server(tmp_path, tiny, capsys):
    db = f"sqlite:///{tmp_path / 'server.db'}"
    code, out, err = cli_in_process(capsys, "serve", "token", "create", "alice", "--db", db)
    assert code == 0, err
    token_file = tmp_path / "alice.token"
    token_file.write_text(out.strip() + "\n")
    with ServerProcess(db, env=plugin_env(tiny["site"]), log_path=tmp_path / "serve.log") as server:
        code, out, err = cli_in_process(capsys, "submit", "bench:tiny-missing:margin", "--db", str(tiny["db"]),
                              "--to", server.url, "--token-file", str(token_file), "--wait", "--timeout", "240")
        assert code == 0, err
        assert "verified" in out
        with urllib.request.urlopen(f"{server.url}/api/leaderboards/tiny-missing", timeout=30) as resp:
            board = json.loads(resp.read())
        assert [r["strategy"] for r in board["rows"]] == ["margin"]

        code, _, err = cli_in_process(capsys, "serve", "token", "revoke", "alice", "--db", db)
        assert code == 0, err
        code, _, err = cli_in_process(capsys, "submit", "bench:tiny-missing:random", "--db", str(tiny["db"]),
                            "--to", server.url, "--token-file", str(token_file))
        assert code == 2 and "401" in err and "revoked" in err
        code, _, err = cli_in_process(capsys, "submit", "bench:tiny-missing:random", "--db", str(tiny["db"]),
                            "--to", "ftp://x", "--token-file", str(token_file))
        assert code == 2 and "--to ftp://x" in err
    assert ServerStore(db).counts() == {"verified": 1}


def test_sigkill_during_a_burst_loses_no_accepted_submission(tmp_path, tiny):
    """Submissions that got a 202 survive a SIGKILL of the server and are verified after a restart."""
    db = f"sqlite:///{tmp_path / 'server.db'}"
    store = ServerStore(db)
    token = store.create_token("loader")
    store.close()
    docs = []
    for i in range(16):
        doc = copy.deepcopy(tiny["docs"]["margin" if i % 2 else "random"])
        doc["strategy"]["label"] = f"{doc['strategy']['label']}-{i}"
        docs.append(_tampered(doc) if i % 4 == 3 else doc)
    server = ServerProcess(db, env=plugin_env(tiny["site"]), extra_args=["--rate-limit", "0"],
                           log_path=tmp_path / "serve.log").start()
    accepted: dict[int, int] = {}  # submission id -> index of the document
    lock = threading.Lock()

    def send(i):
        try:
            code, body = _post(server.url, docs[i], token, timeout=20)
        except (OSError, http.client.HTTPException):  # the server died under us: never accepted
            return
        if code == 202:
            with lock:
                accepted[body["id"]] = i

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(docs))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(accepted) < len(docs) // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL in the middle of the burst
    for t in threads:
        t.join(30)
    assert len(accepted) >= len(docs) // 2
    stored = {row["id"] for row in ServerStore(db).submissions()}
    assert set(accepted) <= stored

    with ServerProcess(db, env=plugin_env(tiny["site"]), log_path=tmp_path / "serve2.log") as again:
        _wait_final(lambda i: _status(again.url, i, token), sorted(stored))
    rows = {row["id"]: row for row in ServerStore(db).submissions()}
    verified = {"margin": 0, "random": 0}
    for sid, i in accepted.items():
        row = rows[sid]
        if i % 4 == 3:
            assert row["status"] == "rejected" and "claimed accuracy" in row["reason"], (sid, i, row)
        elif row["status"] == "verified":
            verified[docs[i]["strategy"]["name"]] += 1
        else:  # one result is verified once: the others of the same strategy are copies of it
            assert "duplicate: the same result" in row["reason"], (sid, i, row)
    honest = {docs[i]["strategy"]["name"] for i in accepted.values() if i % 4 != 3}
    assert verified == {name: int(name in honest) for name in verified}


def test_token_and_serve_commands_refuse_bad_input(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'server.db'}"
    code, out, err = cli_in_process(capsys, "serve", "token", "create", "carol", "--db", db)
    assert code == 0 and len(out.strip()) >= 40, err
    code, _, err = cli_in_process(capsys, "serve", "token", "create", "carol", "--db", db)
    assert code == 2 and "token 'carol' already exists" in err
    code, out, _ = cli_in_process(capsys, "serve", "token", "list", "--db", db)
    assert code == 0 and "carol" in out and "active" in out
    code, _, err = cli_in_process(capsys, "serve", "token", "revoke", "dave", "--db", db)
    assert code == 2 and "no active token" in err
    code, _, err = cli_in_process(capsys, "serve", "token", "create", "x", "--db", str(tmp_path / "no" / "s.db"))
    assert code == 2 and "does not exist" in err
    code, _, err = cli_in_process(capsys, "serve", "--port", "0", "--db", db)
    assert code == 2 and "--port 0" in err
    code, _, err = cli_in_process(capsys, "serve", "token", "create", "x", "--db", "nosuchdriver://x")
    assert code == 2 and "--db nosuchdriver://x" in err
    code, _, err = cli_in_process(capsys, "submit", "whatever", "--to", "http://127.0.0.1:9", "--token-file",
                        str(tmp_path / "missing.token"))
    assert code == 2 and "--token-file" in err and "no such file" in err
