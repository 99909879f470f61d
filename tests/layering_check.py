#!/usr/bin/env python3
"""Checks DESIGN.md §4's layering against the one module graph, the CMake declarations:
`quicksave_module(NAME ... DEPENDS a b)` and `quicksave_layer(NAME DEPENDS a b)`.

A source file of module M (src/M/..., kernels/..., benchmarks/...) may include headers of M itself
and of every module M depends on, directly or through others; the graph must have no cycle and
name only declared modules. Separately, each third-party library may be included only by the
folders listed in THIRD_PARTY (<...> includes;
"..." includes are the project's own). Public headers (include/quicksave/) may include no module at all.
Exit status 1 with one line per violation."""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
# third-party include prefix -> the source folders allowed to use it
THIRD_PARTY = {
    "nlohmann/": {"src/format", "src/cli", "benchmarks"},
    "liburing": {"src/io"},
    "xxhash": {"src/format"},
    "boost/": {"src/engine", "src/load"},
    # benchmarks: the bench times LibTorch's own torch::save as a baseline.
    "torch/": {"src/torch", "src/dist", "src/python", "benchmarks", "include/quicksave/torch.hpp", "include/quicksave/dist.hpp"},
    "ATen/": {"src/torch", "src/dist", "src/python"},
    "c10/": {"src/torch", "src/dist", "src/python"},
    "pybind11/": {"src/python"},
    "cuda_runtime": {"src/stage", "kernels", "src/torch"},
    "cuda.h": {"src/stage", "kernels"},
    "dlpack/": {"src/dlpack", "src/torch", "include/quicksave/dlpack.hpp"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
DECLARATION = re.compile(r"quicksave_(module|layer)\(\s*([a-z_]+)([^)]*)\)", re.S)
SOURCE_SUFFIXES = {".hpp", ".cpp", ".h", ".cu", ".cuh"}
# The adapters, which <quicksave/quicksave.hpp> (the core API) leaves out: they need LibTorch or DLPack.
ADAPTER_HEADERS = {"torch.hpp", "dist.hpp", "dlpack.hpp"}
# Namespaces of modules that share a name with a third-party one (torch:: is LibTorch's).
THIRD_PARTY_NAMESPACES = {"torch"}


def module_graph(root: pathlib.Path) -> dict:
    """name -> set of direct dependencies, merged over every declaration in the CMake files."""
    graph = {}
    for cmake in sorted(root.glob("**/CMakeLists.txt")):
        if any(part.startswith("build") for part in cmake.relative_to(root).parts):
            continue
        text = re.sub(r"#[^\n]*", "", cmake.read_text())
        for kind, name, rest in DECLARATION.findall(text):
            if kind == "layer" and name == "name":
                continue  # the function's own definition
            words = rest.split()
            deps = words[words.index("DEPENDS") + 1:] if "DEPENDS" in words else []
            deps = [d for d in deps if not d.startswith("$")]  # quicksave_module forwarding ${ARG_DEPENDS}
            graph.setdefault(name, set()).update(deps)
    return graph


def reachable(graph: dict, module: str) -> set:
    seen, todo = set(), [module]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def module_of(rel: str, graph: dict):
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) > 2:
        return parts[1]
    if parts[0] in ("kernels", "benchmarks") and parts[0] in graph:
        return parts[0]
    return None


def allowed(path: str, folders: set) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def public_api_problems(graph: dict) -> list:
    """Public headers name no internal namespace, and quicksave.hpp includes every core header."""
    problems = []
    public = ROOT / "include" / "quicksave"
    if not public.is_dir():
        return problems
    internal = re.compile(r"\b(" + "|".join(sorted(set(graph) - THIRD_PARTY_NAMESPACES)) + r")::")
    for header in sorted(public.glob("*.hpp")):
        code = re.sub(r"//[^\n]*", "", header.read_text())
        for name in sorted(set(internal.findall(code))):
            problems.append(f"include/quicksave/{header.name}: names the internal namespace '{name}::'")
    umbrella = public / "quicksave.hpp"
    if umbrella.exists():
        included = {inc.split("/")[-1] for _, inc in INCLUDE.findall(umbrella.read_text())}
        for header in sorted(public.glob("*.hpp")):
            if header.name not in included | ADAPTER_HEADERS | {"quicksave.hpp"}:
                problems.append(f"include/quicksave/quicksave.hpp: does not include the core header {header.name}")
    return problems


def main() -> int:
    problems = []
    graph = module_graph(ROOT)
    if not graph:
        problems.append("no quicksave_module()/quicksave_layer() declarations found in the CMake files")
    for name, deps in sorted(graph.items()):
        for dep in sorted(deps - graph.keys()):
            problems.append(f"module '{name}' depends on '{dep}', which is not a declared module")
        if name in reachable(graph, name):
            problems.append(f"module '{name}' depends on itself (a cycle in the module graph)")
    for folder in sorted(p.name for p in (ROOT / "src").iterdir() if p.is_dir()):
        if folder not in graph:
            problems.append(f"src/{folder} is not a declared module (quicksave_module or quicksave_layer)")

    files = [p for d in ("src", "include", "kernels", "benchmarks") if (ROOT / d).exists()
             for p in (ROOT / d).rglob("*") if p.suffix in SOURCE_SUFFIXES]
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        module = module_of(rel, graph)
        may_use = reachable(graph, module) | {module} if module else set()
        for delimiter, inc in INCLUDE.findall(path.read_text(errors="replace")):
            for prefix, folders in THIRD_PARTY.items():
                if inc.startswith(prefix) and not allowed(rel, folders):
                    problems.append(f"{rel}: includes <{inc}>, allowed only in {sorted(folders)}")
            first = inc.split("/")[0]
            if delimiter != '"' or "/" not in inc or first not in graph:  # <torch/...> is LibTorch
                continue
            if rel.startswith("include/"):
                problems.append(f"{rel}: a public header includes the internal module header '{inc}'")
            elif module and first not in may_use:
                problems.append(f"{rel}: module '{module}' includes '{inc}', but '{module}' does not depend on "
                                f"'{first}' (declared: {sorted(graph.get(module, ()))})")
    problems += public_api_problems(graph)
    for line in problems:
        print(line)
    print(f"layering: {len(graph)} modules, {len(files)} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
