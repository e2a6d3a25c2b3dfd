"""Load benchmark of the leaderboard server: N concurrent submissions over loopback.

    python benchmarks/server/load.py [--n 200] [--benchmark synthetic-missing] [--kill]

1. Runs the benchmark for ``margin`` and ``random`` into benchmarks/out/server-load/results.db
   (once; reused afterwards) and builds their submission documents.
2. Starts ``mmal serve`` on a free 127.0.0.1 port with a fresh database and no rate limit.
3. Baseline: 20 submissions sent one after the other (latency of a POST on an idle server).
4. Load: N submissions sent at once from N threads (a quarter with an edited accuracy), latency
   of every POST recorded; p50/p95 and their ratio to the baseline p50.
5. Waits until every accepted (202) submission is verified or rejected and checks that none
   was lost and each got the verdict it deserves (since issue 15: the first honest copy of
   each strategy's result verified, later copies rejected as duplicates, edited ones rejected).
With ``--kill`` the server gets SIGKILL once half of the burst was accepted, is restarted on
the same database, and the same checks run after the restart.

Results go to benchmarks/out/server-load/result.json. Machine timings are noisy; compare the
ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "out" / "server-load"

def post(url: str, doc: dict, token: str, timeout: float = 120) -> tuple[int, dict, float]:
    data = json.dumps(doc).encode()
    req = urllib.request.Request(f"{url}/api/submissions", data=data, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
            return resp.status, body, time.perf_counter() - t0
    except urllib.error.HTTPError as err:
        return err.code, {}, time.perf_counter() - t0


def status(url: str, sid: int, token: str) -> str:
    req = urllib.request.Request(f"{url}/api/submissions/{sid}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # not verified yet: only its sender sees it
        return json.loads(resp.read())["status"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_final(url: str, ids: list[int], token: str, timeout: float) -> tuple[dict[int, str], float]:
    t0 = time.perf_counter()
    states: dict[int, str] = {}
    while time.perf_counter() - t0 < timeout:
        states = {i: status(url, i, token) for i in ids}
        if all(s in ("verified", "rejected") for s in states.values()):
            break
        time.sleep(0.5)
    return states, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="concurrent submissions")
    parser.add_argument("--benchmark", default="synthetic-missing")
    parser.add_argument("--kill", action="store_true", help="SIGKILL the server mid-burst and restart it")
    args = parser.parse_args()

    from mmal_core.leaderboard.server.storage import ServerStore
    from serverkit import ServerProcess, build_submission_docs

    OUT.mkdir(parents=True, exist_ok=True)
    folder = OUT / args.benchmark
    folder.mkdir(exist_ok=True)
    if all((folder / f"doc-{s}.json").exists() for s in ("margin", "random")):
        docs = {s: json.loads((folder / f"doc-{s}.json").read_text()) for s in ("margin", "random")}
    else:
        print(f"running {args.benchmark} for margin and random (once) ...", flush=True)
        docs = build_submission_docs(folder / "results.db", folder, args.benchmark, ("margin", "random"),
                                     env={"OMP_NUM_THREADS": "1"}, capture=False)

    db_file = OUT / f"server-{int(time.time())}.db"
    url = f"sqlite:///{db_file}"
    store = ServerStore(url)
    # one token: since issue 15 a copy of a result from another token is refused (409)
    tokens = [store.create_token("loader")]
    store.close()
    server = ServerProcess(url, extra_args=["--rate-limit", "0"], log_path=OUT / "serve.log").start()

    # warm-up (first request imports the leaderboard code) and baseline: sequential POSTs
    _, warm, _ = post(server.url, docs["random"], tokens[0])
    baseline = []
    accepted: dict[int, bool] = {warm["id"]: True}  # id -> honest (edited ones are rejected)
    for i in range(20):
        doc = copy.deepcopy(docs["margin"])
        doc["strategy"]["label"] = f"baseline-{i}"
        code, body, seconds = post(server.url, doc, tokens[0])
        assert code == 202, code
        baseline.append(seconds)
        accepted[body["id"]] = True

    burst = []
    for i in range(args.n):
        doc = copy.deepcopy(docs["margin" if i % 2 else "random"])
        doc["strategy"]["label"] = f"{doc['strategy']['label']}-{i}"  # distinct documents
        tampered = i % 4 == 3
        if tampered:
            doc["runs"][-1]["rounds"][-1]["metrics"]["accuracy"] += 0.05
        burst.append((doc, not tampered))
    latencies: list[float] = []
    codes: dict[int, int] = {}
    failed = 0
    lock = threading.Lock()
    start = threading.Barrier(args.n + 1)

    def send(i: int) -> None:
        nonlocal failed
        doc, good = burst[i]
        start.wait()
        try:
            code, body, seconds = post(server.url, doc, tokens[i % len(tokens)])
        except OSError:
            with lock:
                failed += 1
            return
        with lock:
            codes[code] = codes.get(code, 0) + 1
            if code == 202:
                latencies.append(seconds)
                accepted[body["id"]] = good

    threads = [threading.Thread(target=send, args=(i,)) for i in range(args.n)]
    for t in threads:
        t.start()
    t_burst = time.perf_counter()
    start.wait()
    killed_after = None
    if args.kill:
        while len(latencies) < args.n // 2:
            time.sleep(0.005)
        server.kill()
        killed_after = len(latencies)
    for t in threads:
        t.join()
    burst_seconds = time.perf_counter() - t_burst
    if args.kill:
        server = ServerProcess(url, extra_args=["--rate-limit", "0"], log_path=OUT / "serve.log").start()

    states, drain = wait_final(server.url, sorted(accepted), tokens[0], timeout=1800)
    server.stop()
    stored = ServerStore(url).submissions()
    # one result is verified once: of the honest copies of a strategy's result, the first
    # accepted one; the others are rejected as duplicates
    check = ServerStore(url)
    name = {sid: json.loads(check.submission(sid, with_document=True)["document"])["strategy"]["name"]
            for sid in accepted}
    check.close()
    first: dict[str, int] = {}
    for sid in sorted(accepted):
        if accepted[sid]:
            first.setdefault(name[sid], sid)
    firsts = set(first.values())
    wrong = {i: s for i, s in states.items() if s != ("verified" if i in firsts else "rejected")}
    result = {
        "n": args.n, "benchmark": args.benchmark, "kill": args.kill, "killed_after_202s": killed_after,
        "status_codes": codes, "connection_errors": failed, "accepted": len(accepted),
        "stored": len(stored), "lost": len(set(accepted) - {r["id"] for r in stored}),
        "wrong_verdicts": len(wrong), "not_final": sum(s not in ("verified", "rejected") for s in states.values()),
        "baseline_p50_s": statistics.median(baseline), "baseline_p95_s": percentile(baseline, 0.95),
        "burst_p50_s": percentile(latencies, 0.5) if latencies else None,
        "burst_p95_s": percentile(latencies, 0.95) if latencies else None,
        "burst_seconds": burst_seconds, "verification_drain_seconds": drain,
        "verified": sum(s == "verified" for s in states.values()),
        "rejected": sum(s == "rejected" for s in states.values()),
        "cpu_count": os.cpu_count(),
    }
    if latencies:
        result["p50_ratio"] = result["burst_p50_s"] / result["baseline_p50_s"]
        result["p95_ratio"] = result["burst_p95_s"] / result["baseline_p50_s"]
    (OUT / ("result-kill.json" if args.kill else "result.json")).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    db_file.unlink(missing_ok=True)
    if result["lost"] or result["wrong_verdicts"] or result["not_final"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
