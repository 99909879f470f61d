#!/usr/bin/env python3
"""Runs the hostile corpus (make_corpus.py) through every reader: `quicksave verify`,
`quicksave inspect`, the C++ loader (hostile_load) and the Python loaders (py_load.py), each
process under a memory limit (RLIMIT_AS) and a timeout. Every run must end in the expected clean
error or a correct load: never a signal, a hang, an unexpected exception type or exit status;
no file a case names in must_not_exist may appear (code ran); and nothing in the corpus (the
cases' folders and the sibling `victim` folder the cases point at) may change.

    run_corpus.py --scratch DIR --cli quicksave --cxx hostile_load --python /usr/bin/python3
                  --pythonpath build/python [--only SUBSTRING] [--jobs N]
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Exit statuses of a clean result: 0 loaded / valid, 1 a clear error (all four runners).
CLEAN = {"ok": 0, "error": 1}


def snapshot(root):
    """Every entry under root, not following links and never opening anything but regular files
    (a FIFO in the corpus must not block the snapshot)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            entry = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                entry += (h.hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            out[os.path.relpath(path, root)] = entry
    return out


def limit_memory(limit_bytes):  # for subprocess's preexec_fn
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def commands(args, case, corpus):
    path = os.path.join(corpus, case["path"])
    extra = case.get("args", {})
    return {
        "verify": [args.cli, "verify", path],
        "inspect": [args.cli, "inspect", path],
        "cxx": [args.cxx, path] + extra.get("cxx", []),
        "py": [args.python, os.path.join(HERE, "py_load.py"), path] + extra.get("py", []),
    }


# What a clean result prints, per runner: a load's "ok:"/"error (...)" line, verify's verdict,
# the CLI's error line. An exit status alone is not enough (an uncaught Python exception exits 1).
SAYS = {
    ("verify", "ok"): "result: OK",
    ("verify", "error"): ("result: INVALID", "quicksave verify: error"),
    ("inspect", "ok"): "total:",
    ("inspect", "error"): "quicksave inspect: error",
    ("cxx", "ok"): "ok:",
    ("cxx", "error"): "error (",
    ("py", "ok"): "ok:",
    ("py", "error"): "error (",
}


def judge(args, case, runner, corpus, how, code, output, seconds):
    tail = output[-600:].strip().replace("\n", " | ")
    expected = case["expect"][runner]
    if how == "timeout":
        return f"{case['name']} [{runner}]: hung (no result after {args.timeout} s)"
    if how == "signal":
        return f"{case['name']} [{runner}]: killed by signal {code}: {tail}"
    if code != CLEAN[expected]:
        return f"{case['name']} [{runner}]: expected {expected} (exit {CLEAN[expected]}), got exit {code}: {tail}"
    says = SAYS[(runner, expected)]
    if not any(s in output for s in ((says,) if isinstance(says, str) else says)):
        return f"{case['name']} [{runner}]: exit {code} without saying {says!r}: {tail}"
    want = case.get("stdout_contains", {}).get(runner)
    if want and want not in output:
        return f"{case['name']} [{runner}]: the output does not say {want!r}: {tail}"
    for path in case.get("must_not_exist", []):
        if os.path.lexists(os.path.join(corpus, path)):
            return f"{case['name']} [{runner}]: {path} exists: the checkpoint ran code"
    if args.verbose:
        print(f"ok   {case['name']} [{runner}] {seconds:.2f} s: {tail[:160]}", flush=True)
    return None


def run_one(args, case, runner, command, corpus, env):
    started = time.monotonic()
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=args.timeout, preexec_fn=limit_memory(args.memory), env=env, cwd=corpus)
    except subprocess.TimeoutExpired:
        return judge(args, case, runner, corpus, "timeout", None, "", args.timeout)
    how, code = ("signal", -done.returncode) if done.returncode < 0 else ("exit", done.returncode)
    return judge(args, case, runner, corpus, how, code, done.stdout.decode("utf-8", "replace"), time.monotonic() - started)


def run_python_batch(args, jobs, corpus, env, scratch, part):
    """The Python runs of `jobs` [(case, argv)] in one interpreter that forks per case."""
    jobs_file = os.path.join(scratch, f"py-jobs-{part}.json")
    with open(jobs_file, "w") as f:
        json.dump([{"id": i, "argv": argv} for i, (case, argv) in enumerate(jobs)], f)
    command = [args.python, os.path.join(HERE, "py_load.py"), "--batch", jobs_file, str(args.timeout), str(args.python_memory)]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=corpus,
                          timeout=args.timeout * (len(jobs) + 2))
    results = {}
    for line in done.stdout.decode().splitlines():
        r = json.loads(line)
        results[r["id"]] = r
    failures = []
    for i, (case, argv) in enumerate(jobs):
        r = results.get(i)
        if r is None:
            failures.append(f"{case['name']} [py]: no result (the batch ended with {done.returncode}: {done.stderr.decode()[-400:]})")
            continue
        failures.append(judge(args, case, "py", corpus, r["how"], r["code"], r["output"], 0.0))
    return failures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scratch", required=True)
    p.add_argument("--cli", required=True)
    p.add_argument("--cxx", required=True)
    p.add_argument("--python", required=True)
    p.add_argument("--pythonpath", required=True)
    p.add_argument("--only", default="")
    p.add_argument("--runners", default="verify,inspect,cxx,py")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=120)
    # Far below what the hostile inputs would take (3 GB storages, GBs of MARKs), above what
    # LibTorch and Python with torch map at start.
    p.add_argument("--memory", type=int, default=2 << 30)
    p.add_argument("--python-memory", type=int, default=3 << 30)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    args.cli, args.cxx = os.path.abspath(args.cli), os.path.abspath(args.cxx)  # the runs start in the corpus

    scratch = os.path.abspath(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    corpus = os.path.join(scratch, "corpus")
    subprocess.run([sys.executable, os.path.join(HERE, "make_corpus.py"), corpus], check=True)
    with open(os.path.join(corpus, "manifest.json")) as f:
        manifest = json.load(f)
    cases = [c for c in manifest["cases"] if args.only in c["name"]]
    runners = args.runners.split(",")
    before = snapshot(corpus)

    env = dict(os.environ, PYTHONPATH=os.path.abspath(args.pythonpath), PYTHONDONTWRITEBYTECODE="1",
               MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1")
    futures = []
    python_jobs = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for case in cases:
            cmds = commands(args, case, corpus)
            for runner in runners:
                if runner not in case["expect"]:
                    continue
                if runner == "py":
                    python_jobs.append((case, cmds["py"][2:]))
                else:
                    futures.append(pool.submit(run_one, args, case, runner, cmds[runner], corpus, env))
        parts = [python_jobs[k :: args.jobs] for k in range(args.jobs)]
        batches = [pool.submit(run_python_batch, args, part, corpus, env, scratch, k) for k, part in enumerate(parts) if part]
        failures = [f for f in (j.result() for j in futures) if f]
        failures += [f for b in batches for f in b.result() if f]
    runs = len(futures) + len(python_jobs)

    after = snapshot(corpus)
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            failures.append(f"{path} changed: {before.get(path)} -> {after.get(path)}")
    for f in failures:
        print("FAIL", f)
    print(f"{runs} runs of {len(cases)} cases, {len(failures)} failures")
    if not failures:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
