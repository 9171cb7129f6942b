"""SASS report: a static report of the CUDA kernels compiled for sm_90 (H100), no GPU needed.

    python tools/sass.py [--baseline REV] [--dump DIR] [--json PATH]

A kernel developer's tool (tools/, outside the installed package): it needs the source tree.

The kernels of xla_ops/rubiks_shift_cuda.cu are compiled with nvcc (`-cubin -arch=sm_90 -Xptxas -v`
plus the device flags of the nvcc command in setup.py) into a temporary folder and disassembled
with nvdisasm. Per kernel it prints:
- registers, spill stores / loads and static shared memory (ptxas -v);
- threads per block: __launch_bounds__ (EIATTR_MAX_THREADS in the cubin), else the block size the
  host code launches that kernel family with (KNOWN_BLOCK_SIZES, marked '*');
- theoretical occupancy on sm_90, computed here (occupancy());
- the per-element loop: loops are backward branches (a BRA to a lower address), the innermost ones
  contain no other loop, and the hottest is the innermost loop with the most global loads (LDG),
  ties broken by size. Its instructions are counted statically over its address range (both sides
  of an if inside it count, e.g. v1's per-thread channel-change block), with its LDG, BRA and calls
  to compiler runtime routines (e.g. `__cuda_sm20_div_s64`, the 64-bit division's slow path).
  Per-element figures divide by the elements one iteration handles. Assumption: for the kernels
  that store one output per element (forward, input gradient) that is the number of elements its
  global stores (STG) write (bytes stored / element size); for the others (shift gradient, and
  anything unclassified) it is 1.
Kernels are named by demangled name, shortened with the template parameter names of the sources
(`interpolate_kernel<f32, adjoint, unit-stride>`), and sorted into families (forward, grad_input,
shift_grad, other) by loose name patterns, so renamed kernels are still reported.

`--baseline REV` compiles xla_ops/*.h and xla_ops/rubiks_shift_cuda.cu of a git revision the same
way (with the nvcc flags of that revision's setup.py) and reports it beside the working tree, with
the ratio of forward per-element instructions; `4ec6e12` holds the v1 kernels.

Tools: nvcc (CUDA_HOME / CUDA_PATH / PATH) and nvdisasm (PATH, the CUDA toolkit, or the pip
package nvidia-cuda-nvdisasm); c++filt for the names. cuobjdump -sass runs nvdisasm itself, so it
is not used: ptxas -v gives the resource usage and nvdisasm's listing the EIATTR attributes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

ARCH = "sm_90"
V1_REV = "4ec6e12"  # the v1 kernels (documentation; --baseline has no default)
CUDA_SOURCE = "xla_ops/rubiks_shift_cuda.cu"
# Device-code flags of setup.py's nvcc command, used when a version's setup.py cannot be read.
DEFAULT_NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr"]

# Block sizes the host code launches each family with, for kernels without __launch_bounds__.
KNOWN_BLOCK_SIZES = {"forward": 256, "grad_input": 256, "shift_grad": 256, "other": 256}
# Families whose loop stores one output element per element; the others count 1 per iteration.
STORING_FAMILIES = ("forward", "grad_input")
ELEMENTS_ASSUMPTION = ("elements per iteration = elements written by the loop's STG for forward / "
                       "input-gradient kernels, 1 for the others")
# Labels of a bool template argument that is false (true prints the parameter's own name).
FALSE_LABELS = {"adjoint": "forward", "unit-stride": "strided", "unit-w": "strided-w"}
# Type arguments: element types, and index types (i64 = 64-bit offsets).
TYPE_LABELS = {"float": "f32", "__nv_bfloat16": "bf16", "__half": "f16", "double": "f64",
               "int": "i32", "unsigned int": "u32", "long": "i64", "long long": "i64",
               "unsigned long": "u64"}
ELEMENT_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "f64": 8}


@dataclasses.dataclass(frozen=True)
class SMLimits:
    """Per-SM resources of a compute capability, as the CUDA occupancy calculator uses them."""

    registers: int = 65536
    register_unit: int = 256  # registers are allocated per warp in multiples of this
    max_warps: int = 64
    max_blocks: int = 32
    shared_bytes: int = 228 * 1024
    shared_per_block_max: int = 227 * 1024
    shared_reserved_per_block: int = 1024  # the driver's per-block reservation
    shared_unit: int = 128
    max_registers_per_thread: int = 255


SM90 = SMLimits()


# ---------------------------------------------------------------------------------------------
# Occupancy.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    fraction: float  # resident warps / max warps
    limiter: str  # "warps", "registers", "shared", "blocks" (the binding limit)


def occupancy(threads: int, registers: int, shared_bytes: int = 0,
              sm: SMLimits = SM90) -> Occupancy:
    """Theoretical occupancy of a kernel launched with `threads` per block: the fewest blocks any of
    warp slots, registers, shared memory and the block limit allows."""
    warps_per_block = math.ceil(threads / 32)
    regs_per_warp = math.ceil(max(registers, 1) * 32 / sm.register_unit) * sm.register_unit
    limits = {
        "blocks": sm.max_blocks,
        "warps": sm.max_warps // warps_per_block,
        # Whole warps get registers, so the warps the register file holds come first.
        "registers": (sm.registers // regs_per_warp) // warps_per_block
        if registers <= sm.max_registers_per_thread else 0,
    }
    if shared_bytes > sm.shared_per_block_max:
        limits["shared"] = 0
    else:
        per_block = math.ceil(shared_bytes / sm.shared_unit) * sm.shared_unit
        limits["shared"] = sm.shared_bytes // (per_block + sm.shared_reserved_per_block)
    # Ties name the first of warps, registers, shared, blocks: the resource rather than the cap.
    order = ("warps", "registers", "shared", "blocks")
    limiter = min(order, key=lambda k: (limits[k], order.index(k)))
    blocks = limits[limiter]
    warps = blocks * warps_per_block
    return Occupancy(blocks, warps, warps / sm.max_warps, limiter)


# ---------------------------------------------------------------------------------------------
# SASS parsing (nvdisasm output) and loops.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Instruction:
    address: int
    opcode: str  # with modifiers, e.g. "LDG.E.U16.CONSTANT"
    operands: str
    predicate: str = ""
    target: str | None = None  # label or address of a branch or call target

    @property
    def base(self) -> str:
        return self.opcode.split(".", 1)[0]


@dataclasses.dataclass
class Function:
    name: str  # mangled
    instructions: list[Instruction]
    labels: dict[str, int]  # label -> address of the instruction after it
    max_threads: tuple[int, ...] | None = None  # EIATTR_MAX_THREADS (x, y, z)

    def body(self) -> list[Instruction]:
        """The kernel's own code: the instructions before its first called subroutine (nvdisasm
        places `$__internal_*` routines such as the 64-bit division after the kernel's EXIT)."""
        called = [self.labels[i.target] for i in self.instructions
                  if i.base == "CALL" and i.target in self.labels]
        end = min(called, default=None)
        return [i for i in self.instructions if end is None or i.address < end]


_SECTION = re.compile(r"^\s*\.section\s+([^,\s]+)")
_LABEL = re.compile(r"^([.$\w@][\w.$@]*):\s*$")
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\b([^;]*);")
_TARGET = re.compile(r"`\(([^)]+)\)")
_ADDRESS = re.compile(r"^\s*(0x[0-9a-fA-F]+)\b")
_WORD = re.compile(r"\.word\s+(0x[0-9a-fA-F]+|\d+)")


def parse_nvdisasm(text: str) -> dict[str, Function]:
    """Functions of an nvdisasm listing: code of `.text.NAME` sections and the EIATTR_MAX_THREADS
    of `.nv.info.NAME` sections."""
    functions: dict[str, Function] = {}
    pending: list[str] = []  # labels waiting for the next instruction's address
    max_threads: dict[str, tuple[int, ...]] = {}
    section = ""
    attribute = ""
    words: list[int] = []

    def close_attribute():
        if attribute == "EIATTR_MAX_THREADS" and section.startswith(".nv.info.") and words:
            max_threads[section.removeprefix(".nv.info.")] = tuple(words[:3])

    for line in text.splitlines():
        if m := _SECTION.match(line):
            close_attribute()
            attribute, words = "", []
            section = m.group(1)
            pending.clear()
            if section.startswith(".text."):
                name = section.removeprefix(".text.")
                functions[name] = Function(name, [], {})
            continue
        if section.startswith(".nv.info."):
            if "//----- nvinfo :" in line:
                close_attribute()
                attribute, words = line.split(":", 1)[1].strip(), []
            elif m := _WORD.search(line):
                words.append(int(m.group(1), 0))
            continue
        if not section.startswith(".text."):
            continue
        fn = functions[section.removeprefix(".text.")]
        if m := _LABEL.match(line):
            pending.append(m.group(1))
        elif m := _INSTRUCTION.match(line):
            address = int(m.group(1), 16)
            operands = m.group(4).strip()
            target = _TARGET.search(operands) or _ADDRESS.match(operands)
            ins = Instruction(address, m.group(3), operands, (m.group(2) or "").strip(),
                              target.group(1) if target else None)
            fn.instructions.append(ins)
            fn.labels.update(dict.fromkeys(pending, address))
            pending.clear()
    close_attribute()
    for name, fn in functions.items():
        fn.max_threads = max_threads.get(name)
    return functions


def target_address(fn: Function, ins: Instruction) -> int | None:
    if ins.target is None:
        return None
    if ins.target.startswith("0x"):
        return int(ins.target, 16)
    return fn.labels.get(ins.target)


@dataclasses.dataclass
class Loop:
    start: int  # address of the loop header (the back edges' target)
    end: int  # address of the last back edge
    instructions: list[Instruction]

    def count(self, base: str) -> int:
        return sum(i.base == base for i in self.instructions)

    def calls(self) -> Counter:
        """Called routines by short name, e.g. {'div_s64': 6}."""
        return Counter(short_routine(i.target or "?") for i in self.instructions
                       if i.base == "CALL")

    def stored_bytes(self) -> int:
        return sum(store_width(i.opcode) for i in self.instructions if i.base == "STG")


def find_loops(fn: Function) -> list[Loop]:
    """Loops of the kernel body: each BRA to a lower address is a back edge; back edges to the same
    header make one loop, spanning the header to the last of them."""
    body = fn.body()
    ends: dict[int, int] = {}
    for ins in body:
        target = target_address(fn, ins)
        # target == address is the trap `BRA self` after EXIT, not a loop.
        if ins.base == "BRA" and target is not None and target < ins.address:
            ends[target] = max(ends.get(target, target), ins.address)
    return [Loop(start, end, [i for i in body if start <= i.address <= end])
            for start, end in sorted(ends.items())]


def innermost(loops: list[Loop]) -> list[Loop]:
    """Loops that contain no other loop."""
    return [outer for outer in loops
            if not any(inner is not outer and outer.start <= inner.start and inner.end <= outer.end
                       for inner in loops)]


def hottest(loops: list[Loop]) -> Loop | None:
    """The loop with the most global loads, then the most instructions: the per-element one."""
    return max(loops, key=lambda lp: (lp.count("LDG"), len(lp.instructions)), default=None)


def hottest_loop(fn: Function) -> tuple[Loop | None, Loop | None, int]:
    """The hottest innermost loop of a kernel, the shortest innermost loop with as many global
    loads (a specialised fast path, e.g. the w interior where no corner needs a test; the same
    loop when there is none), and the number of innermost loops."""
    inner = innermost(find_loops(fn))
    hot = hottest(inner)
    return hot, fast_path(inner, hot), len(inner)


def fast_path(loops: list[Loop], hot: Loop | None) -> Loop | None:
    """The shortest of `loops` with as many global loads as the hottest one."""
    if hot is None:
        return None
    return min((lp for lp in loops if lp.count("LDG") == hot.count("LDG")),
               key=lambda lp: len(lp.instructions))


def point_loop(fn: Function) -> Loop | None:
    """The shortest innermost loop that loads (global or shared memory) and stores to global
    memory: the steady-state point loop of an interpolation kernel (v3's carried interior reading
    global memory, v4's reading its stage), or None."""
    loops = [lp for lp in innermost(find_loops(fn))
             if lp.count("STG") and (lp.count("LDG") or lp.count("LDS"))]
    return min(loops, key=lambda lp: len(lp.instructions), default=None)


def store_width(opcode: str) -> int:
    """Bytes one STG writes, from its size modifier (none means 32 bits)."""
    mods = opcode.split(".")[1:]
    for mod, size in (("U8", 1), ("S8", 1), ("U16", 2), ("S16", 2), ("64", 8), ("128", 16)):
        if mod in mods:
            return size
    return 4


def short_routine(name: str) -> str:
    """`$__internal_13_$__cuda_sm20_div_s64` -> `div_s64`."""
    name = re.sub(r"^\$__internal_\d+_\$", "", name)
    return re.sub(r"^__cuda_sm\d+_", "", name)


# ---------------------------------------------------------------------------------------------
# ptxas -v.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Resources:
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    shared: int = 0


def parse_ptxas(text: str) -> dict[str, Resources]:
    """Resource usage per entry function from `-Xptxas -v` output."""
    out: dict[str, Resources] = {}
    current: Resources | None = None
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '([^']+)'", line):
            current = out.setdefault(m.group(1), Resources())
        elif m := re.search(r"Function properties for (\S+)", line):
            current = out.get(m.group(1))  # None for device functions: not reported
        elif current is not None:
            if m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                              r"(\d+) bytes spill loads", line):
                current.stack, current.spill_stores, current.spill_loads = map(int, m.groups())
            if m := re.search(r"Used (\d+) registers", line):
                current.registers = int(m.group(1))
            if m := re.search(r"(\d+) bytes smem", line):
                current.shared = int(m.group(1))
    return out


# ---------------------------------------------------------------------------------------------
# Names.
# ---------------------------------------------------------------------------------------------
def demangle(names: list[str]) -> dict[str, str]:
    """Demangled names by c++filt (the names themselves where it is missing)."""
    cxxfilt = shutil.which("c++filt")
    if not names or cxxfilt is None:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


@dataclasses.dataclass
class SourceInfo:
    """What the names need from the sources: template parameters of each kernel, enumerators."""

    template_params: dict[str, list[tuple[str, str]]]  # kernel -> [(type, name)]
    enums: dict[str, list[str]]  # enum -> enumerators in value order


def source_info(texts: list[str]) -> SourceInfo:
    params: dict[str, list[tuple[str, str]]] = {}
    enums: dict[str, list[str]] = {}
    for text in texts:
        for m in re.finditer(r"template\s*<([^<>]*)>\s*__global__\s+(?:void\s+)?"
                             r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(?:void\s+)?(\w+)\s*\(", text):
            decl = []
            for p in m.group(1).split(","):
                words = p.split("=")[0].split()
                if len(words) >= 2:
                    decl.append((" ".join(words[:-1]), words[-1]))
            params[m.group(2)] = decl
        for m in re.finditer(r"enum\s+(?:class|struct)?\s*(\w+)\s*(?::\s*\w+\s*)?\{([^}]*)\}",
                             text):
            values, nxt = {}, 0
            for e in m.group(2).split(","):
                if not e.strip():
                    continue
                name, _, value = (s.strip() for s in e.partition("="))
                nxt = int(value, 0) if value else nxt
                values[nxt] = name
                nxt += 1
            enums[m.group(1)] = [values.get(i, str(i)) for i in range(max(values, default=-1) + 1)]
    return SourceInfo(params, enums)


def _split_top(s: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _kebab(param: str) -> str:
    """kUnitStride -> unit-stride."""
    param = re.sub(r"^k(?=[A-Z])", "", param)
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", param).lower()


def _enumerator_label(name: str) -> str:
    return re.sub(r"^k(?=[A-Z0-9])", "", name).lower()  # kBF16 -> bf16


def short_name(demangled: str, info: SourceInfo) -> str:
    """`void ns::(anonymous namespace)::interpolate_kernel<(rubiks::DType)0, true, true>(...)` ->
    `interpolate_kernel<f32, adjoint, unit-stride>`."""
    s = demangled.strip()
    if s.endswith(")"):  # drop the parameter list
        depth = 0
        for k in range(len(s) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(s[k], 0)
            if depth == 0:
                s = s[:k]
                break
    s = s.removeprefix("void ")
    lt = s.find("<")
    head, args = (s, "") if lt < 0 else (s[:lt], s[lt + 1:s.rfind(">")])
    base = head.split("::")[-1].strip()
    if lt < 0:
        return base
    params = info.template_params.get(base, [])
    labels = []
    for k, arg in enumerate(_split_top(args)):
        ptype, pname = params[k] if k < len(params) else ("", "")
        if m := re.fullmatch(r"\(([\w:]+)\)(-?\d+)", arg):  # an enum value: (rubiks::DType)0
            enum = info.enums.get(m.group(1).split("::")[-1], [])
            value = int(m.group(2))
            labels.append(_enumerator_label(enum[value]) if 0 <= value < len(enum) else arg)
        elif arg in ("true", "false") and pname:
            label = _kebab(pname)
            labels.append(label if arg == "true" else FALSE_LABELS.get(label, f"no-{label}"))
        elif arg in TYPE_LABELS:
            labels.append(TYPE_LABELS[arg])
        elif pname and re.fullmatch(r"-?\d+[a-zA-Z]*", arg):
            labels.append(f"{_kebab(pname)}={arg.rstrip('uUlL')}")
        else:
            labels.append(arg)
    return f"{base}<{', '.join(labels)}>"


def family(short: str) -> str:
    """forward / grad_input / shift_grad / other, by loose name patterns."""
    s = short.lower()
    if re.search(r"shift_?grad|grad_?shift|dshift", s):
        return "shift_grad"
    if re.search(r"adjoint|grad_?in|input_?grad|backward|\bdx\b", s):
        return "grad_input"
    if re.search(r"forward|interpolate|fwd", s):
        return "forward"
    return "other"


def element_bytes(short: str) -> int | None:
    for label in re.findall(r"[<,]\s*(\w+)", short):
        if label in ELEMENT_BYTES:
            return ELEMENT_BYTES[label]
    return None


# ---------------------------------------------------------------------------------------------
# Tools and compilation.
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _toolkit():
    """xla_ops/toolkit.py of the source tree: the toolkit found as the builds find it."""
    spec = importlib.util.spec_from_file_location("rubiks_toolkit",
                                                  repo_root() / "xla_ops" / "toolkit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_nvcc() -> str | None:
    return _toolkit().find_nvcc()


def find_nvdisasm(nvcc: str | None) -> str | None:
    """nvdisasm on PATH, beside nvcc, or from the pip package nvidia-cuda-nvdisasm."""
    if found := shutil.which("nvdisasm"):
        return found
    roots = (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"))
    dirs = [os.path.join(r, "bin") for r in roots if r]
    if nvcc:
        dirs += [os.path.dirname(os.path.realpath(nvcc)), _toolkit().toolkit(nvcc).bin or ""]
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        dirs += sorted(glob.glob(os.path.join(root, "*", "bin")))
    for d in dirs:
        path = os.path.join(d, "nvdisasm")
        if d and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release [\d.]+, V([\d.]+)", out)
    return m.group(1) if m else "?"


def tools() -> tuple[str, str]:
    """(nvcc, nvdisasm), or SystemExit naming what is missing."""
    nvcc = find_nvcc()
    nvdisasm = find_nvdisasm(nvcc)
    missing = []
    if nvcc is None:
        missing.append("nvcc (install the CUDA toolkit; set CUDA_HOME or put nvcc on PATH)")
    if nvdisasm is None:
        missing.append("nvdisasm (`pip install nvidia-cuda-nvdisasm`, or the CUDA toolkit's)")
    if missing:
        raise SystemExit("the sass report needs " + " and ".join(missing))
    return nvcc, nvdisasm


def repo_root() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / CUDA_SOURCE).is_file():
        raise SystemExit(f"the sass report needs the source tree: {root / CUDA_SOURCE} not found")
    return root


def export_revision(rev: str, dest: Path, root: Path) -> str:
    """Writes xla_ops/*.h and the .cu of `rev` under dest; returns its short commit hash."""
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"git {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    commit = git("rev-parse", "--short", f"{rev}^{{commit}}").strip()
    files = [f for f in git("ls-tree", "--name-only", commit, "xla_ops/").split()
             if f.endswith(".h") or f == CUDA_SOURCE]
    files += [f for f in git("ls-tree", "--name-only", commit).split() if f == "setup.py"]
    if CUDA_SOURCE not in files:
        raise SystemExit(f"{rev} has no {CUDA_SOURCE}")
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        (dest / f).write_text(git("show", f"{commit}:{f}"))
    return commit


def nvcc_flags(setup_py: str) -> list[str]:
    """The flags setup.py passes nvcc for device code: the string literals of its `[nvcc, ...-o...]`
    command (and of lists it unpacks there with *NAME), less -c, -o and the host compiler's
    -Xcompiler flags; DEFAULT_NVCC_FLAGS when there is no such command."""
    # The compile command is the one with an output (-o); setup.py also asks nvcc --dryrun.
    commands = [m.group(1) for m in re.finditer(r"\[\s*nvcc\s*,(.*?)\]", setup_py, re.S)
                if re.search(r"[\"']-o[\"']", m.group(1))]
    if not commands:
        return list(DEFAULT_NVCC_FLAGS)
    body = commands[0]
    for name in re.findall(r"\*([A-Za-z_]\w*)", body):
        if d := re.search(rf"^{name}\s*=\s*\[(.*?)\]", setup_py, re.S | re.M):
            body += "," + d.group(1)
    flags, skip = [], False
    for lit in re.findall(r"\"([^\"]*)\"|'([^']*)'", body):
        flag = lit[0] or lit[1]
        if skip:
            skip = False
        elif flag == "-Xcompiler":
            skip = True  # its argument is a host flag
        elif flag.startswith("-") and flag not in ("-c", "-o"):
            flags.append(flag)
    return flags or list(DEFAULT_NVCC_FLAGS)


def compile_and_disassemble(src_root: Path, work: Path, nvcc: str, nvdisasm: str,
                            flags: list[str], arch: str = ARCH) -> tuple[str, str]:
    """(ptxas -v log, nvdisasm listing) of src_root/CUDA_SOURCE compiled to a cubin for `arch`."""
    import jax  # the FFI headers of this environment, as setup.py uses

    cubin = work / "kernels.cubin"
    cmd = [nvcc, "-cubin", f"-arch={arch}", *flags, "-Xptxas", "-v",
           f"-I{src_root / 'xla_ops'}", "-isystem", jax.ffi.include_dir(),
           str(src_root / CUDA_SOURCE), "-o", str(cubin)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        out = (r.stdout + r.stderr).splitlines()
        more = f"\n(... {len(out) - 40} more lines)" if len(out) > 40 else ""
        raise SystemExit(f"nvcc failed on {src_root / CUDA_SOURCE} ({' '.join(cmd)}):\n"
                         + "\n".join(out[:40]) + more)
    listing = subprocess.run([nvdisasm, str(cubin)], capture_output=True, text=True, check=True)
    return r.stdout + r.stderr, listing.stdout


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
def kernel_rows(version: str, ptxas_log: str, listing: str, sources: list[str],
                sm: SMLimits = SM90) -> list[dict]:
    """One row per kernel (entry function) of a compiled version."""
    resources = parse_ptxas(ptxas_log)
    functions = parse_nvdisasm(listing)
    names = sorted(set(resources) | set(functions))
    demangled = demangle(names)
    info = source_info(sources)
    rows = []
    for mangled in names:
        res = resources.get(mangled, Resources())
        fn = functions.get(mangled)
        short = short_name(demangled[mangled], info)
        fam = family(short)
        if fn is not None and fn.max_threads:
            threads, threads_source = math.prod(fn.max_threads), "launch_bounds"
        else:
            threads, threads_source = KNOWN_BLOCK_SIZES[fam], "assumed"
        occ = occupancy(threads, res.registers, res.shared, sm)
        row = dict(version=version, kernel=short, family=fam, mangled=mangled,
                   registers=res.registers, spill_store_bytes=res.spill_stores,
                   spill_load_bytes=res.spill_loads, stack_bytes=res.stack,
                   shared_static_bytes=res.shared, threads_per_block=threads,
                   threads_source=threads_source, blocks_per_sm=occ.blocks_per_sm,
                   warps_per_sm=occ.warps_per_sm, occupancy=occ.fraction,
                   occupancy_limiter=occ.limiter, loop=None, fast_loop=None, point_loop=None)
        loop, fast, n_inner = hottest_loop(fn) if fn is not None else (None, None, 0)
        if loop is not None:
            row["loop"] = loop_summary(loop, fam, element_bytes(short), n_inner)
            row["fast_loop"] = loop_summary(fast, fam, element_bytes(short), n_inner)
        if fn is not None and (pl := point_loop(fn)) is not None:
            row["point_loop"] = loop_summary(pl, fam, element_bytes(short), n_inner)
        rows.append(row)
    return sorted(rows, key=lambda r: (("forward", "grad_input", "shift_grad", "other")
                                       .index(r["family"]), r["kernel"]))


def loop_summary(loop: Loop, fam: str, elem_bytes: int | None, n_inner: int) -> dict:
    stores = loop.count("STG")
    if fam in STORING_FAMILIES and stores:
        elements = loop.stored_bytes() / elem_bytes if elem_bytes else float(stores)
        basis = "stores"
    else:
        elements, basis = 1.0, "assumed"
    n = len(loop.instructions)
    calls = loop.calls()
    return dict(start=loop.start, end=loop.end, instructions=n, ldg=loop.count("LDG"), stg=stores,
                bra=loop.count("BRA"), local_accesses=loop.count("LDL") + loop.count("STL"),
                elements_per_iteration=elements, elements_basis=basis,
                instructions_per_element=n / elements, ldg_per_element=loop.count("LDG") / elements,
                slow_calls=dict(sorted(calls.items())),
                slow_calls_per_element=sum(calls.values()) / elements, innermost_loops=n_inner)


def forward_ratio(rows: list[dict], baseline: str, current: str) -> dict | None:
    """Forward per-element instructions, current / baseline: per kernel name both versions have,
    and the ratio of the means over each version's forward kernels."""
    def per_element(version):
        return {r["kernel"]: r["loop"]["instructions_per_element"] for r in rows
                if r["version"] == version and r["family"] == "forward" and r["loop"]}

    base, cur = per_element(baseline), per_element(current)
    if not base or not cur:
        return None
    mean_base = sum(base.values()) / len(base)
    mean_cur = sum(cur.values()) / len(cur)
    return dict(baseline=baseline, current=current, mean_baseline=mean_base, mean_current=mean_cur,
                ratio=mean_cur / mean_base,
                per_kernel={k: cur[k] / base[k] for k in sorted(base.keys() & cur.keys())})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help=f"also compile the kernels of this git revision and report them side "
                             f"by side ({V1_REV} holds the v1 kernels)")
    parser.add_argument("--dump", metavar="DIR", default=None,
                        help="keep each version's ptxas log and SASS listing in DIR")


def run(baseline: str | None = None, dump: str | None = None) -> dict:
    nvcc, nvdisasm = tools()
    root = repo_root()
    versions = []
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rubiks_sass_") as tmp:
        builds = []
        if baseline:
            src = Path(tmp) / "baseline"
            commit = export_revision(baseline, src, root)
            builds.append((baseline, commit, src))
        builds.append(("current", "working tree", root))
        for label, rev, src in builds:
            work = Path(tmp) / f"build_{len(versions)}"
            work.mkdir()
            setup_py = src / "setup.py"
            flags = nvcc_flags(setup_py.read_text()) if setup_py.is_file() else DEFAULT_NVCC_FLAGS
            log, listing = compile_and_disassemble(src, work, nvcc, nvdisasm, flags)
            sources = [p.read_text() for p in sorted((src / "xla_ops").glob("*.h"))]
            sources.append((src / CUDA_SOURCE).read_text())
            rows += kernel_rows(label, log, listing, sources)
            versions.append(dict(label=label, revision=rev, nvcc_flags=flags))
            if dump:
                os.makedirs(dump, exist_ok=True)
                Path(dump, f"{label}.ptxas.txt").write_text(log)
                Path(dump, f"{label}.sass").write_text(listing)
    ratio = forward_ratio(rows, baseline, "current") if baseline else None
    if ratio:
        ratio["baseline_revision"] = versions[0]["revision"]
    machine = f"{ARCH} (static: nvcc {_version(nvcc)}, nvdisasm {_version(nvdisasm)}, no GPU)"
    return {"suite": "sass", "machine": machine, "arch": ARCH, "versions": versions,
            "assumption": ELEMENTS_ASSUMPTION, "forward_ratio": ratio, "rows": rows}


def _fmt(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def format_table(result: dict) -> str:
    lines = [f"SASS report on {result['machine']}"]
    lines += [f"  {v['label']} = {v['revision']}: nvcc -cubin -arch={result['arch']} "
              f"{' '.join(v['nvcc_flags'])}" for v in result["versions"]]
    width = max([len(r["kernel"]) for r in result["rows"]] + [6])
    lines += [
        "loop = instructions of the innermost loop with the most LDG (static count over its "
        "address range: both sides of an if count); fast = the shortest innermost loop with as "
        "many LDG (a specialised path such as the w interior; = loop when there is none);",
        f"{result['assumption']}; thr/blk * = assumed (no __launch_bounds__); occupancy limited by "
        "W(arps) R(egisters) S(hared) B(locks)",
        f"{'version':9s} {'kernel':{width}s} {'regs':>4s} {'spill st/ld':>11s} {'smem':>5s} "
        f"{'thr/blk':>7s} {'blk/SM':>6s} {'occ':>6s}  {'loop':>5s} {'el/it':>5s} "
        f"{'inst/el':>7s} {'fast/el':>7s} {'LDG':>4s} {'LDG/el':>6s} {'BRA':>4s}  calls in loop"]
    for r in result["rows"]:
        threads = f"{r['threads_per_block']}{'*' if r['threads_source'] == 'assumed' else ''}"
        head = (f"{r['version'][:9]:9s} {r['kernel']:{width}s} {r['registers']:4d} "
                f"{r['spill_store_bytes']:5d}/{r['spill_load_bytes']:<5d} "
                f"{r['shared_static_bytes']:5d} {threads:>7s} {r['blocks_per_sm']:6d} "
                f"{r['occupancy'] * 100:3.0f}% {r['occupancy_limiter'][0].upper()}")
        lp = r["loop"]
        if lp is None:
            lines.append(head + "  (no loop found)")
            continue
        calls = ", ".join(f"{n}x {name}" for name, n in lp["slow_calls"].items()) or "-"
        lines.append(head + f"  {lp['instructions']:5d} {_fmt(lp['elements_per_iteration']):>5s} "
                     f"{lp['instructions_per_element']:7.1f} "
                     f"{r['fast_loop']['instructions_per_element']:7.1f} {lp['ldg']:4d} "
                     f"{lp['ldg_per_element']:6.2f} {lp['bra']:4d}  {calls}")
    if any(r["loop"] and r["loop"]["slow_calls"] for r in result["rows"]):
        lines.append("calls: compiler runtime routines, e.g. div_s64 = 64-bit signed division (the "
                     "slow path nvcc emits beside an inline 32-bit one)")
    if ratio := result.get("forward_ratio"):
        v2v1 = " (v2 / v1)" if ratio["baseline_revision"].startswith(V1_REV) else ""
        lines.append(f"forward per-element instructions, {ratio['current']} / {ratio['baseline']}"
                     f"{v2v1}: {ratio['ratio']:.2f}x (means over the forward kernels: "
                     f"{ratio['mean_current']:.1f} / {ratio['mean_baseline']:.1f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/sass.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the rows here")
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run(baseline=args.baseline, dump=args.dump)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
