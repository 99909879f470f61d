"""The libraries the dynamic loader picks for this build's torch-facing binaries (ldd) come from
the one LibTorch the build was configured with: libc10/libtorch* from its lib folder, and, for a
wheel's LibTorch, the CUDA runtime and NCCL from the wheel's nvidia/*/lib folders (not
/usr/local/cuda's older NCCL, not Debian's /usr/lib libc10). A second copy of c10 in one process
corrupts the heap at exit; this fails first, naming the binary and the library.

    check_torch_line.py TORCH_LIB_DIR CUDA_LIB_DIRS(colon-separated, may be empty) BINARY...
"""
import os
import re
import subprocess
import sys


def main() -> int:
    torch_dir = os.path.realpath(sys.argv[1])
    cuda_dirs = [os.path.realpath(d) for d in sys.argv[2].split(":") if d]
    problems, checked = [], 0
    for binary in sys.argv[3:]:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$", line)
            if not m:
                continue
            name, path = m.group(1), m.group(2).strip()
            torch_lib = re.match(r"lib(c10|torch|shm|caffe2)", name)
            cuda_lib = cuda_dirs and re.match(r"lib(cudart|nccl|cublas|cudnn|nvrtc)\.", name)
            if not (torch_lib or cuda_lib):
                continue
            checked += 1
            if path == "not found":
                problems.append(f"{binary}: {name} not found")
                continue
            real = os.path.realpath(path)
            if torch_lib and os.path.dirname(real) != torch_dir:
                problems.append(f"{binary}: {name} => {real}, not from {torch_dir}")
            if cuda_lib and not any(real.startswith(d + os.sep) for d in cuda_dirs):
                problems.append(f"{binary}: {name} => {real}, not from the torch wheel's {':'.join(cuda_dirs)}")
    for p in problems:
        print("MIXED:", p)
    print(f"{checked} torch/CUDA libraries of {len(sys.argv) - 3} binaries checked, {len(problems)} from elsewhere")
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
