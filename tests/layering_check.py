#!/usr/bin/env python3
"""Checks DESIGN.md §4's layering: which module may include which third-party library, and that a
module includes only modules below it. Exit status 1 with one line per violation."""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
ORDER = ["format", "plan", "io", "commit", "read", "stage", "engine", "torch", "dist", "python", "cli"]
# third-party include prefix -> the source folders allowed to use it
THIRD_PARTY = {
    "nlohmann/": {"src/format", "src/cli", "benchmarks"},
    "liburing": {"src/io"},
    "xxhash": {"src/format"},
    "boost/": {"src/engine"},
    # src/cli: `quicksave bench` times LibTorch's own torch::save as a baseline.
    "torch/": {"src/torch", "src/dist", "src/python", "src/cli", "include/quicksave/torch.hpp", "include/quicksave/dist.hpp"},
    "ATen/": {"src/torch", "src/dist", "src/python"},
    "c10/": {"src/torch", "src/dist", "src/python"},
    "pybind11/": {"src/python"},
    "cuda_runtime": {"src/stage", "kernels", "src/torch"},
    "cuda.h": {"src/stage", "kernels"},
    "dlpack/": {"src/plan", "src/torch", "include/quicksave/dlpack.hpp"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def allowed(path: str, folders: set) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def main() -> int:
    problems = []
    files = [p for d in ("src", "include", "kernels") for p in (ROOT / d).rglob("*") if p.suffix in {".hpp", ".cpp", ".h", ".cu", ".cuh"}]
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        module = rel.split("/")[1] if rel.startswith("src/") else None
        for inc in INCLUDE.findall(path.read_text(errors="replace")):
            for prefix, folders in THIRD_PARTY.items():
                if inc.startswith(prefix) and not allowed(rel, folders):
                    problems.append(f"{rel}: includes <{inc}>, allowed only in {sorted(folders)}")
            first = inc.split("/")[0]
            if module in ORDER and first in ORDER and ORDER.index(first) > ORDER.index(module):
                problems.append(f"{rel}: module '{module}' includes '{inc}' from the higher module '{first}'")
    for line in problems:
        print(line)
    print(f"layering: {len(files)} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
