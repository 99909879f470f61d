"""The Python loader of the hostile corpus: loads PATH with quicksave.serialization and reports
"ok: ..." (exit 0) or the error (exit 1). Exceptions other than quicksave's errors and the
built-in ones the API documents (OSError, ValueError, RuntimeError) are defects (exit 3).

    py_load.py PATH [--model ab] [--strict] [--bin]
    py_load.py --batch JOBS.json TIMEOUT MEMORY_BYTES

--batch imports torch once, then runs each job ({"id", "argv"}) in a forked child under
RLIMIT_AS = MEMORY_BYTES and TIMEOUT seconds (starting Python with torch per case takes seconds),
and prints one JSON line per job: {"id", "how": "exit"|"signal"|"timeout", "code", "output"}.
"""
import json
import os
import resource
import signal
import sys
import tempfile
import time

import torch

import quicksave
from quicksave import serialization


class Ab(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(2, 2)
        self.b = torch.nn.Linear(2, 2)


class Sink:
    """A model that takes any key: load_torch_model on folders without a real module."""

    def __init__(self):
        self.keys = []

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict, strict=False):
        self.keys.extend(state_dict.keys())
        return torch.nn.modules.module._IncompatibleKeys(missing_keys=[], unexpected_keys=[])


def main(argv):
    path, flags = argv[1], argv[2:]
    strict = "--strict" in flags
    safe = "--bin" not in flags
    try:
        if "--model" in flags:
            model = Ab()
            keys = serialization.load_torch_model(model, path, strict=strict, safe=safe)
            print(f"ok: loaded into the module, {len(keys.missing_keys)} missing, {len(keys.unexpected_keys)} unexpected keys")
        elif path.endswith(".bin") or path.endswith(".safetensors"):
            state_dict = serialization.load_state_dict_from_file(path)
            print(f"ok: {len(state_dict)} tensors")
        else:
            sink = Sink()
            serialization.load_torch_model(sink, path, strict=False, safe=safe)
            print(f"ok: {len(sink.keys)} tensors")
        return 0
    except RecursionError as e:  # a RuntimeError, but a defect: input must not recurse without bound
        print(f"defect: RecursionError: {e}")
        return 3
    except (quicksave.Error, OSError, ValueError, RuntimeError) as e:
        print(f"error ({type(e).__name__}): {e}")
        return 1
    except BaseException as e:  # noqa: B902 - any other type is what this check looks for
        print(f"defect: {type(e).__name__}: {e}")
        return 3


def run_batch(jobs_file, timeout, memory):
    with open(jobs_file) as f:
        jobs = json.load(f)
    for job in jobs:
        with tempfile.TemporaryFile() as out:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:  # the child: one load, its own limits, its own exit status
                code = 4
                try:
                    os.dup2(out.fileno(), 1)
                    os.dup2(out.fileno(), 2)
                    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
                    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                    code = main(["py_load.py"] + job["argv"])
                    sys.stdout.flush()
                finally:
                    os._exit(code)
            deadline = time.monotonic() + timeout
            how, code = "timeout", None
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    how, code = ("signal", os.WTERMSIG(status)) if os.WIFSIGNALED(status) else ("exit", os.WEXITSTATUS(status))
                    break
                time.sleep(0.01)
            if how == "timeout":
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            out.seek(0)
            output = out.read().decode("utf-8", "replace")
        print(json.dumps({"id": job["id"], "how": how, "code": code, "output": output}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--batch":
        sys.exit(run_batch(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
    sys.exit(main(sys.argv))
