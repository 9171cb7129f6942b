"""tools/sass.py: SASS parsing and loop finding on handwritten listings, the sm_90 occupancy
calculator, names and flags, and one real compile of the working tree's kernels (needs nvcc)."""

from __future__ import annotations

import json
import shutil

import pytest

from tools import sass

# nvdisasm's layout: an .nv.info section with EIATTR_MAX_THREADS, then the code. An outer loop
# (.L_x_1 .. 0x0160) holds an inner loop (.L_x_2 .. 0x0110, two back edges) with two loads, a
# store and a call to the 64-bit division; the division routine after EXIT has a loop of its own
# that is not the kernel's, and the trap `BRA self` is no loop.
KERNEL = "_Z6kernelPKfPf"
LISTING = f"""
	.section	.nv.info.{KERNEL},"",@"SHT_CUDA_INFO"
	.align	4
	//----- nvinfo : EIATTR_KPARAM_INFO
        /*0000*/ 	.byte	0x04, 0x17
        /*0004*/ 	.word	0x00000000
	//----- nvinfo : EIATTR_MAX_THREADS
	.align		4
.L_10:
        /*00c4*/ 	.byte	0x04, 0x05
        /*00c6*/ 	.short	(.L_12 - .L_11)
.L_11:
        /*00c8*/ 	.word	0x00000080
        /*00cc*/ 	.word	0x00000002
        /*00d0*/ 	.word	0x00000001
	//----- nvinfo : EIATTR_CRS_STACK_SIZE
.L_12:
        /*00d8*/ 	.word	0x00000000

	.section	.text.{KERNEL},"ax",@progbits
	.align	128
{KERNEL}:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   ISETP.GE.AND P0, PT, R0, 0x10, PT ;
        /*0030*/               @P0 EXIT ;
.L_x_1:
        /*0040*/                   IMAD.MOV.U32 R2, RZ, RZ, R0 ;
.L_x_2:
        /*0050*/                   LDG.E.CONSTANT R4, desc[UR4][R6.64] ;
        /*0060*/                   LDG.E.CONSTANT R5, desc[UR4][R6.64+0x4] ;
        /*0070*/                   FADD R4, R4, R5 ;
        /*0080*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_s64) ;
        /*0090*/                   STG.E desc[UR4][R8.64], R4 ;
        /*00a0*/                   ISETP.NE.AND P1, PT, R2, RZ, PT ;
        /*00b0*/               @P1 BRA `(.L_x_2) ;
        /*00c0*/                   IADD3 R2, R2, -0x1, RZ ;
        /*00d0*/                   ISETP.GT.AND P2, PT, R2, RZ, PT ;
        /*00e0*/               @P2 BRA `(.L_x_3) ;
        /*00f0*/                   NOP ;
        /*0100*/                   NOP ;
        /*0110*/              @!P2 BRA `(.L_x_2) ;
.L_x_3:
        /*0120*/                   IADD3 R0, R0, 0x1, RZ ;
        /*0130*/                   ISETP.LT.AND P3, PT, R0, 0x20, PT ;
        /*0140*/                   STG.E desc[UR4][R10.64], R0 ;
        /*0150*/                   MOV R3, R0 ;
        /*0160*/               @P3 BRA `(.L_x_1) ;
        /*0170*/                   EXIT ;
.L_x_4:
        /*0180*/                   BRA `(.L_x_4) ;
        .type           $__internal_0_$__cuda_sm20_div_s64,@function
$__internal_0_$__cuda_sm20_div_s64:
        /*0190*/                   IADD3 R9, R9, 0x1, RZ ;
.L_x_5:
        /*01a0*/                   IMAD R9, R9, R9, RZ ;
        /*01b0*/                   ISETP.NE.AND P0, PT, R9, RZ, PT ;
        /*01c0*/               @P0 BRA `(.L_x_5) ;
        /*01d0*/                   RET.REL.NODEC R2 `({KERNEL}) ;
.L_x_9:

	.section	.text._Z8straightv,"ax",@progbits
_Z8straightv:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   EXIT ;
.L_x_20:
        /*0020*/                   BRA `(.L_x_20) ;
"""

PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1av' for 'sm_90'
ptxas info    : Function properties for _Z1av
    8 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 80 registers, used 1 barriers, 8 bytes cumulative stack size, 3072 bytes smem
ptxas info    : Compile time = 34.584 ms
ptxas info    : Function properties for _Z6helperv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function '_Z1bv' for 'sm_90'
ptxas info    : Function properties for _Z1bv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 56 registers, used 0 barriers
"""

# v1's declarations, as source_info reads them.
V1_SOURCE = """
enum class DType { kF32, kBF16, kF16 };
template <DType D, bool kAdjoint, bool kUnitStride>
__global__ void __launch_bounds__(kThreads)
    interpolate_kernel(const typename Storage<D>::T* __restrict__ src, float* dst) {}
template <DType D>
__global__ void __launch_bounds__(kPartialsThreads)
    shift_grad_partials_kernel(const typename Storage<D>::T* __restrict__ x) {}
"""


def test_parse_nvdisasm_code_labels_and_max_threads():
    fns = sass.parse_nvdisasm(LISTING)
    assert set(fns) == {KERNEL, "_Z8straightv"}
    fn = fns[KERNEL]
    assert fn.max_threads == (128, 2, 1)
    assert fns["_Z8straightv"].max_threads is None
    assert len(fn.instructions) == 30  # 25 of the kernel, 5 of the division
    assert fn.labels[".L_x_1"] == 0x40 and fn.labels[".L_x_3"] == 0x120
    assert fn.labels["$__internal_0_$__cuda_sm20_div_s64"] == 0x190
    bra = next(i for i in fn.instructions if i.address == 0x110)
    assert (bra.base, bra.predicate, bra.target) == ("BRA", "@!P2", ".L_x_2")
    ldg = next(i for i in fn.instructions if i.address == 0x50)
    assert ldg.opcode == "LDG.E.CONSTANT" and ldg.base == "LDG"
    # The body stops at the called routine.
    assert fn.body()[-1].address == 0x180


def test_loops_innermost_and_hottest():
    fn = sass.parse_nvdisasm(LISTING)[KERNEL]
    loops = sass.find_loops(fn)
    # Two back edges to .L_x_2 make one loop; the division routine's loop and the trap are none.
    assert [(lp.start, lp.end) for lp in loops] == [(0x40, 0x160), (0x50, 0x110)]
    inner = sass.innermost(loops)
    assert [(lp.start, lp.end) for lp in inner] == [(0x50, 0x110)]
    loop, fast, n_inner = sass.hottest_loop(fn)
    assert n_inner == 1 and loop.start == 0x50 and fast is loop
    assert len(loop.instructions) == 13
    assert (loop.count("LDG"), loop.count("STG"), loop.count("BRA")) == (2, 1, 3)
    assert loop.calls() == {"div_s64": 1}
    assert sass.hottest_loop(sass.parse_nvdisasm(LISTING)["_Z8straightv"]) == (None, None, 0)


def test_hottest_loop_prefers_global_loads_over_size():
    big = sass.Loop(0x200, 0x400,
                    [sass.Instruction(a, "FADD", "") for a in range(0x200, 0x410, 16)])
    small = sass.Loop(0x50, 0x60, [sass.Instruction(0x50, "LDG.E", ""),
                                   sass.Instruction(0x60, "BRA", "")])
    assert sass.innermost([big, small]) == [big, small]  # disjoint loops are both innermost
    assert sass.hottest([big, small]) is small
    assert sass.hottest([big]) is big and sass.hottest([]) is None


def test_fast_loop_is_the_shortest_with_as_many_loads():
    def loop(start, n_fadd):
        body = [sass.Instruction(start, "LDG.E", "")]
        body += [sass.Instruction(start + 16 * (k + 1), "FADD", "") for k in range(n_fadd)]
        return sass.Loop(start, start + 16 * n_fadd, body)

    edge, interior, other = loop(0x100, 9), loop(0x300, 3), loop(0x500, 1)
    other.instructions = [i for i in other.instructions if i.base != "LDG"]  # no loads at all
    loops = [edge, interior, other]
    hot = sass.hottest(loops)
    assert hot is edge and sass.fast_path(loops, hot) is interior
    assert sass.fast_path([edge], edge) is edge and sass.fast_path([], None) is None


def test_loop_summary_elements_per_iteration():
    def loop(*opcodes):
        return sass.Loop(0, 16 * len(opcodes), [sass.Instruction(16 * k, op, "")
                                                for k, op in enumerate(opcodes)])

    # One bf16 store: one element; a 64-bit f32 store: two; the shift gradient: 1 by assumption.
    s = sass.loop_summary(loop("LDG.E.U16", "FADD", "STG.E.U16", "BRA"), "forward", 2, 1)
    assert (s["elements_per_iteration"], s["instructions_per_element"]) == (1, 4)
    s = sass.loop_summary(loop("LDG.E", "LDG.E", "STG.E.64", "BRA"), "grad_input", 4, 1)
    assert (s["elements_per_iteration"], s["instructions_per_element"], s["ldg_per_element"]) == (
        2, 2, 1)
    s = sass.loop_summary(loop("LDG.E", "STG.E", "STG.E", "BRA"), "shift_grad", 4, 1)
    assert (s["elements_per_iteration"], s["elements_basis"]) == (1, "assumed")
    s = sass.loop_summary(loop("LDG.E", "STG.E", "STG.E", "BRA"), "forward", None, 1)
    assert s["elements_per_iteration"] == 2  # unknown dtype: one element per store


@pytest.mark.parametrize("threads, regs, smem, blocks, occ, limiter", [
    (256, 64, 0, 4, 0.5, "registers"),
    (256, 80, 0, 3, 0.375, "registers"),
    (256, 91, 3072, 2, 0.25, "registers"),  # 91 * 32 rounds up to 3072 registers per warp
    (256, 32, 0, 8, 1.0, "warps"),
    (512, 28, 2048, 4, 1.0, "warps"),
    (32, 16, 0, 32, 0.5, "blocks"),
    (128, 32, 100 * 1024, 2, 0.125, "shared"),  # 228 KB / (100 KB + 1 KB reserved)
    (128, 32, 228 * 1024, 0, 0.0, "shared"),  # over the 227 KB a block may have
])
def test_occupancy_sm90(threads, regs, smem, blocks, occ, limiter):
    o = sass.occupancy(threads, regs, smem)
    assert (o.blocks_per_sm, o.fraction, o.limiter) == (blocks, occ, limiter)
    assert o.warps_per_sm == blocks * -(-threads // 32)


def test_parse_ptxas():
    res = sass.parse_ptxas(PTXAS)
    assert set(res) == {"_Z1av", "_Z1bv"}  # the device function is no kernel
    assert res["_Z1av"] == sass.Resources(registers=80, spill_stores=4, spill_loads=8, stack=8,
                                          shared=3072)
    assert res["_Z1bv"] == sass.Resources(registers=56)


def test_short_names_and_families():
    info = sass.source_info([V1_SOURCE])
    assert info.enums["DType"] == ["kF32", "kBF16", "kF16"]
    prefix = "void rubiks::(anonymous namespace)::"
    cases = {
        "interpolate_kernel<(rubiks::DType)0, true, true>(rubiks::Storage<(rubiks::DType)0>::T "
        "const*, float*)": ("interpolate_kernel<f32, adjoint, unit-stride>", "grad_input"),
        "interpolate_kernel<(rubiks::DType)1, false, false>(float const*)":
            ("interpolate_kernel<bf16, forward, strided>", "forward"),
        "shift_grad_partials_kernel<(rubiks::DType)2>(float const*)":
            ("shift_grad_partials_kernel<f16>", "shift_grad"),
        "shift_grad_reduce_kernel(float const*, float*, long, long)":
            ("shift_grad_reduce_kernel", "shift_grad"),
    }
    for demangled, (short, fam) in cases.items():
        assert sass.short_name(prefix + demangled, info) == short
        assert sass.family(short) == fam
    # Names of a rewrite, classified loosely; unknown parameters print as they are.
    assert sass.short_name("void ns::forward_kernel<float, 4>(float const*)", info) == (
        "forward_kernel<f32, 4>")
    assert sass.family("grad_input_kernel<bf16>") == "grad_input"
    assert sass.family("rubiks_forward_rows<f32>") == "forward"
    assert sass.family("grad_shift_pass1<f32>") == "shift_grad"
    assert sass.family("transpose") == "other"
    assert sass.element_bytes("interpolate_kernel<bf16, forward, strided>") == 2
    assert sass.element_bytes("shift_grad_reduce_kernel") is None
    assert sass.short_routine("$__internal_13_$__cuda_sm20_div_s64") == "div_s64"
    assert [sass.store_width(op) for op in ("STG.E", "STG.E.U16", "STG.E.64", "STG.E.128")] == [
        4, 2, 8, 16]


def test_nvcc_flags_from_setup_py():
    setup_py = '''
NVCC_EXTRA = ["-fmad=false"]
def dirs(nvcc):
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull])
def build(nvcc, src, obj):
    cmd = [nvcc, "-c", src, "-o", obj, "-std=c++20", "-O3", "--expt-relaxed-constexpr",
           "-Xcompiler", "-fPIC,-fvisibility=hidden", *NVCC_EXTRA, *gencode]
'''
    assert sass.nvcc_flags(setup_py) == ["-std=c++20", "-O3", "--expt-relaxed-constexpr",
                                         "-fmad=false"]
    assert sass.nvcc_flags("no nvcc here") == sass.DEFAULT_NVCC_FLAGS


def test_export_revision(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not found")
    root = sass.repo_root()
    commit = sass.export_revision("HEAD", tmp_path, root)
    assert commit and (tmp_path / sass.CUDA_SOURCE).is_file()
    assert (tmp_path / "xla_ops" / "rubiks_shift_math.h").is_file()
    with pytest.raises(SystemExit, match="no-such-revision"):
        sass.export_revision("no-such-revision", tmp_path / "x", root)


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(sass, "find_nvcc", lambda: None)
    monkeypatch.setattr(sass, "find_nvdisasm", lambda nvcc: None)
    with pytest.raises(SystemExit, match="nvcc .*nvdisasm"):
        sass.tools()


# One compile of the working tree's kernels for the whole module (seconds to a minute).
@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    if sass.find_nvcc() is None:
        pytest.skip("nvcc not found")
    path = tmp_path_factory.mktemp("sass") / "sass.json"
    sass.main(["--json", str(path)])
    return json.loads(path.read_text())


@pytest.mark.slow
def test_current_kernels_compile_and_have_loops(compiled):
    rows = compiled["rows"]
    assert rows and all(r["version"] == "current" for r in rows)
    assert {r["family"] for r in rows} >= {"forward", "grad_input", "shift_grad"}
    for r in rows:
        assert r["registers"] > 0, r["kernel"]
        assert r["loop"] is not None and r["loop"]["instructions"] > 0, r["kernel"]
        assert 0 < r["occupancy"] <= 1 and r["threads_per_block"] > 0
    assert "SASS report on sm_90" in sass.format_table(compiled)
