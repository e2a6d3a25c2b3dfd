"""Load and fault benchmark of a leaderboard that cannot be gamed (issue 15): PostgreSQL, one
web server and K verification worker processes, N mixed submissions at C at once.

    python benchmarks/server/trust_load.py [--n 1000] [--concurrency 200] [--time-limit 20]

The submissions (on the tiny test benchmark, so that a replay takes seconds) are a shuffled
mix of: honest results (one per strategy), copies of them sent by other tokens, copies with an
edited accuracy sent by the owner, forged selections (random's picks claimed as another
strategy) and a few jobs of a strategy that hangs. Three runs, each on a fresh database of one
throwaway PostgreSQL cluster (Unix socket): 1 worker, 4 workers, and 4 workers with faults (a
worker SIGKILLed in the middle of a replay and restarted, the server SIGKILLed in the middle of
the burst and restarted; clients retry a connection error with the same document, as
``mmal submit`` users would). Each run checks that nothing accepted is lost and every verdict
is right, and reports the time until the last honest submission is verified; the figure to
compare is the 1-worker / 4-worker ratio of the same invocation.
Output: benchmarks/out/server-trust/result.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "out" / "server-trust"
STRATEGIES = ("random", "margin", "entropy", "least_confidence", "badge", "coreset")
#: Kinds of the submissions after the honest ones, in turn: mostly copies (answered at once),
#: a tenth edited numbers and a tenth forged selections (each costs a replay).
MIX = ("duplicate",) * 8 + ("edited", "forged")


def post(url: str, doc: dict, token: str, retry_for: float = 120.0) -> tuple[int, dict]:
    """POST a submission; a connection error (server down) is retried with the same document."""
    data = json.dumps(doc).encode()
    deadline = time.monotonic() + retry_for
    while True:
        req = urllib.request.Request(f"{url}/api/submissions", data=data, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.loads(err.read() or b"{}")
            except Exception:  # the answer was cut off (the server died): send again
                pass
        except Exception:  # refused / reset / incomplete: the server is being restarted
            if time.monotonic() > deadline:
                return 0, {}
            time.sleep(0.5)


def build_docs(site: Path, bad_site: Path) -> dict:
    from serverkit import (
        BAD_STRATEGIES_SOURCE, TINY_BENCHMARK, build_submission_docs, plugin_env, write_benchmark_plugin, write_plugin,
    )

    OUT.mkdir(parents=True, exist_ok=True)
    write_benchmark_plugin(site)
    write_plugin(bad_site, BAD_STRATEGIES_SOURCE, "mmal-test-bad-strategies")
    if not all((OUT / f"doc-{s}.json").exists() for s in STRATEGIES):
        print("running the tiny benchmark for", ", ".join(STRATEGIES), "(once) ...", flush=True)
        build_submission_docs(OUT / "results.db", OUT, TINY_BENCHMARK["name"], STRATEGIES, env=plugin_env(site),
                              capture=False)
    docs = {s: json.loads((OUT / f"doc-{s}.json").read_text()) for s in STRATEGIES}
    env = {**os.environ, **plugin_env(site)}
    env["PYTHONPATH"] = os.pathsep.join([str(bad_site), env["PYTHONPATH"]])
    code = ("import json, sys; from mmal_core.leaderboard.submission import source_hash; "
            "print(json.dumps(source_hash('hang')))")
    hang_hash = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                          text=True).stdout)
    hang = copy.deepcopy(docs["random"])
    hang["strategy"].update(name="hang", label="hang")
    hang["plugin"] = {"distribution": "mmal-test-bad-strategies", "version": "0.1", "source_hash": hang_hash}
    docs["hang"] = hang
    return docs, env


def plan(docs: dict, n: int, tokens: list[str], rng: random.Random) -> list[dict]:
    """The submissions: dicts with doc, token, kind and key (the result group)."""
    owners = {s: tokens[i] for i, s in enumerate(STRATEGIES)}
    items = [{"doc": docs[s], "token": owners[s], "kind": "honest", "key": s} for s in STRATEGIES]
    for i in range(3):
        doc = copy.deepcopy(docs["hang"])
        doc["strategy"]["label"] = f"hang-{i}"
        items.append({"doc": doc, "token": tokens[-1], "kind": "slow", "key": "hang"})
    i = 0
    while len(items) < n:
        i += 1
        s = STRATEGIES[i % len(STRATEGIES)]
        kind = MIX[i % len(MIX)]
        doc = copy.deepcopy(docs[s])
        if kind == "duplicate":  # another token sends the owner's result under its own label
            token = tokens[len(STRATEGIES) + i % (len(tokens) - len(STRATEGIES) - 1)]
            doc["strategy"]["label"] = f"{s}-copy-{i}"
            items.append({"doc": doc, "token": token, "kind": kind, "key": s})
        elif kind == "edited":  # the owner sends its result with a better accuracy
            doc["strategy"]["label"] = f"{s}-edit-{i}"
            run = doc["runs"][i % len(doc["runs"])]
            run["rounds"][-1]["metrics"]["accuracy"] = min(1.0, run["rounds"][-1]["metrics"]["accuracy"] + 0.05)
            items.append({"doc": doc, "token": owners[s], "kind": kind, "key": s})
        else:  # random's picks claimed as strategy s (s != random)
            if s == "random":
                continue
            doc = copy.deepcopy(docs["random"])
            doc["strategy"].update(name=s, label=f"{s}-forged-{i}")
            doc["plugin"] = copy.deepcopy(docs[s]["plugin"])
            token = tokens[len(STRATEGIES) + i % (len(tokens) - len(STRATEGIES) - 1)]
            items.append({"doc": doc, "token": token, "kind": kind, "key": f"forged-{s}"})
    rng.shuffle(items)
    return items


def one_run(cluster, docs: dict, env: dict, n: int, concurrency: int, workers: int, time_limit: float,
            faults: bool, seed: int = 0) -> dict:
    from mmal_core.leaderboard.server.storage import ServerStore
    from serverkit import ServerProcess

    url = cluster.create_database()
    store = ServerStore(url)
    tokens = [store.create_token(f"user-{i}") for i in range(50)]
    items = plan(docs, n, tokens, random.Random(seed))
    log = open(OUT / "processes.log", "ab")
    server_args = ["--workers", "0", "--rate-limit", "0", "--token-budget", "0"]
    server = ServerProcess(url, env=env, extra_args=server_args, log_path=OUT / "serve.log").start()

    def start_worker():
        return subprocess.Popen([sys.executable, "-m", "mmal_core", "serve", "worker", "--db", url,
                                 "--job-time-limit", str(time_limit), "--lease", "5"],
                                env={**env, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=log)

    procs = [start_worker() for _ in range(workers)]
    answers: dict[int, tuple[int, dict]] = {}
    lock = threading.Lock()
    done = [0]

    def send(k: int) -> None:
        answer = post(server.url, items[k]["doc"], items[k]["token"])
        with lock:
            answers[k] = answer
            done[0] += 1

    fault_log: dict = {}
    servers = [server]
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(send, k) for k in range(len(items))]
            if faults:
                while done[0] < len(items) // 2:
                    time.sleep(0.005)
                server.kill()  # the server in the middle of the burst
                fault_log["server_killed_after_answers"] = done[0]
                server = ServerProcess(url, env=env, extra_args=server_args, log_path=OUT / "serve.log",
                                       port=server.port).start()
                servers.append(server)
                # a worker in the middle of a replay
                victim = procs[0]
                deadline = time.monotonic() + 300
                held = []
                while time.monotonic() < deadline and not held:
                    with store.engine.connect() as conn:
                        held = [r[0] for r in conn.exec_driver_sql(
                            "SELECT id FROM submissions WHERE status = 'verifying' AND worker LIKE %(w)s",
                            {"w": f"%:{victim.pid}:%"}).all()]
                    time.sleep(0.05)
                victim.send_signal(signal.SIGKILL)
                victim.wait(30)
                procs[0] = start_worker()
                fault_log["worker_killed_holding"] = held
            for f in futures:
                f.result()
        burst_seconds = time.perf_counter() - t0

        accepted = {k: body["id"] for k, (code, body) in answers.items() if code == 202}
        honest_first: set[int] = set()
        while True:
            rows = {r["id"]: r for r in store.submissions()}
            if all(rows[i]["status"] in ("verified", "rejected") for i in accepted.values()):
                break
            # the time until the last honest result is verified (one per strategy)
            verified = sum(row["status"] == "verified" for row in rows.values())  # only honest results verify
            if verified >= len(STRATEGIES) and "honest_done_s" not in fault_log:
                fault_log["honest_done_s"] = time.perf_counter() - t0
            time.sleep(0.5)
        drain_seconds = time.perf_counter() - t0
        if "honest_done_s" not in fault_log:
            fault_log["honest_done_s"] = drain_seconds
    finally:  # never leave a server or worker behind
        for proc in [*procs, *(s.proc for s in servers if s.proc is not None)]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*procs, *(s.proc for s in servers if s.proc is not None)]:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()

    # verdicts
    wrong, codes = [], {}
    for k, (code, _body) in answers.items():
        codes[code] = codes.get(code, 0) + 1
    by_key: dict[str, list[int]] = {}
    for k, sid in accepted.items():
        item, row = items[k], rows[sid]
        if item["kind"] == "edited":
            ok = row["status"] == "rejected" and "claimed accuracy" in (row["reason"] or "")
        elif item["kind"] == "forged":
            ok = row["status"] == "rejected" and "selection not reproduced" in (row["reason"] or "")
        elif item["kind"] == "slow":
            ok = row["status"] == "rejected" and "time limit" in (row["reason"] or "")
        else:
            by_key.setdefault(item["key"], []).append(sid)
            ok = True
        if not ok:
            wrong.append((item["kind"], sid, row["status"], row["reason"]))
    for key, ids in by_key.items():  # one copy of a result is verified: one sent by its first submitter
        first = min(ids)
        won = [sid for sid in ids if rows[sid]["status"] == "verified"]
        # (a submitter may send its result twice under two labels: either copy may win then)
        if len(won) != 1 or rows[won[0]]["token_id"] != rows[first]["token_id"]:
            wrong += [("honest/duplicate", sid, rows[sid]["status"], rows[sid]["reason"]) for sid in ids]
        honest_first.add(first)
    conflicts = [k for k, (code, body) in answers.items() if code == 409]
    wrong += [("409 for a first submission", k, None, None) for k in conflicts
              if items[k]["kind"] in ("honest", "duplicate") and
              not any(items[j]["key"] == items[k]["key"] and j in accepted for j in range(len(items)))]
    lost = [sid for sid in accepted.values() if sid not in rows]
    retried = []
    for sid in fault_log.get("worker_killed_holding", []):
        retried.append({"id": sid, "attempts": rows[sid]["attempts"], "status": rows[sid]["status"]})
    store.close()
    return {
        "workers": workers, "faults": faults, "submissions": len(items), "concurrency": concurrency,
        "status_codes": codes, "accepted": len(accepted), "stored": len(rows), "lost": len(lost),
        "wrong_verdicts": len(wrong), "wrong_examples": wrong[:5],
        "verified": sum(r["status"] == "verified" for r in rows.values()),
        "rejected": sum(r["status"] == "rejected" for r in rows.values()),
        "kinds": {kind: sum(1 for it in items if it["kind"] == kind) for kind in
                  ("honest", "duplicate", "edited", "forged", "slow")},
        "burst_seconds": round(burst_seconds, 1), "last_honest_verified_s": round(fault_log["honest_done_s"], 1),
        "all_final_s": round(drain_seconds, 1),
        "worker_killed_holding": retried, "server_killed_after_answers": fault_log.get("server_killed_after_answers"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=20.0, help="job time limit (the hanging strategy's cost)")
    parser.add_argument("--runs", default="1,4,4f", help="comma-separated: K workers, 'Kf' with faults")
    args = parser.parse_args()

    from serverkit import PostgresCluster, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        sys.exit("PostgreSQL is not installed (Debian package 'postgresql')")
    docs, env = build_docs(OUT / "site", OUT / "bad-site")
    cluster = PostgresCluster(bindir).start()
    results = []
    try:
        for spec in args.runs.split(","):
            faults = spec.endswith("f")
            workers = int(spec.rstrip("f"))
            print(f"run: {workers} worker(s){' with faults' if faults else ''} ...", flush=True)
            result = one_run(cluster, docs, env, args.n, args.concurrency, workers, args.time_limit, faults)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        cluster.stop()
    plain = {r["workers"]: r for r in results if not r["faults"]}
    summary = {"runs": results, "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    if 1 in plain and 4 in plain:
        summary["last_honest_ratio_1_over_4"] = plain[1]["last_honest_verified_s"] / plain[4]["last_honest_verified_s"]
        summary["all_final_ratio_1_over_4"] = plain[1]["all_final_s"] / plain[4]["all_final_s"]
    (OUT / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if any(r["lost"] or r["wrong_verdicts"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
