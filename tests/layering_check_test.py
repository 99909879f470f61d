#!/usr/bin/env python3
"""The layering check itself: it must fail on a tree that breaks the declared module graph, and
pass on one that keeps it (so that a silent parser bug cannot make `layering` always pass)."""
import pathlib
import subprocess
import sys
import tempfile

CHECK = pathlib.Path(__file__).with_name("layering_check.py")


def tree(root: pathlib.Path, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run(files: dict) -> tuple:
    with tempfile.TemporaryDirectory() as d:
        tree(pathlib.Path(d), files)
        out = subprocess.run([sys.executable, str(CHECK), d], capture_output=True, text=True)
        return out.returncode, out.stdout


BASE = {
    "src/low/CMakeLists.txt": "quicksave_module(low SOURCES a.cpp)\n",
    "src/mid/CMakeLists.txt": "quicksave_module(mid SOURCES b.cpp DEPENDS low)\n",
    "src/top/CMakeLists.txt": "# a comment naming quicksave_layer(top DEPENDS low) is ignored\nquicksave_layer(top DEPENDS mid)\n",
    "src/low/a.hpp": "#include <vector>\n",
    "src/mid/b.cpp": '#include "low/a.hpp"\n',
    "src/top/c.cpp": '#include "low/a.hpp"\n#include "mid/b.hpp"\n#include <vector>\n',
}


def expect(name: str, files: dict, ok: bool, needle: str = "") -> int:
    code, out = run(files)
    good = (code == 0) == ok and needle in out
    print(("ok   " if good else "FAIL ") + name + ("" if good else f": exit {code}\n{out}"))
    return 0 if good else 1


def main() -> int:
    failures = 0
    failures += expect("a tree that keeps its graph passes", BASE, True)
    failures += expect("an upward include fails", {**BASE, "src/low/bad.cpp": '#include "mid/b.hpp"\n'}, False,
                       "module 'low' includes 'mid/b.hpp'")
    failures += expect("a cycle fails", {**BASE, "src/low/CMakeLists.txt": "quicksave_module(low SOURCES a.cpp DEPENDS top)\n"},
                       False, "cycle")
    failures += expect("an undeclared folder fails", {**BASE, "src/extra/x.cpp": "\n"}, False, "src/extra is not a declared module")
    failures += expect("an unknown dependency fails", {**BASE, "src/top/CMakeLists.txt": "quicksave_layer(top DEPENDS nowhere)\n"},
                       False, "'nowhere', which is not a declared module")
    failures += expect("a public header including a module fails", {**BASE, "include/quicksave/p.hpp": '#include "low/a.hpp"\n'},
                       False, "public header")
    failures += expect("a third-party include outside its folders fails", {**BASE, "src/mid/d.cpp": "#include <liburing.h>\n"},
                       False, "allowed only in")
    failures += expect("a public header naming an internal namespace fails",
                       {**BASE, "include/quicksave/p.hpp": "namespace quicksave { class X { low::Thing* t; }; }\n"},
                       False, "internal namespace 'low::'")
    failures += expect("an umbrella header missing a core header fails",
                       {**BASE, "include/quicksave/quicksave.hpp": '#include "quicksave/a.hpp"\n',
                        "include/quicksave/a.hpp": "\n", "include/quicksave/b.hpp": "\n", "include/quicksave/torch.hpp": "\n"},
                       False, "does not include the core header b.hpp")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
