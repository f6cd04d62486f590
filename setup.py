"""Build the softmax_ext extension, with OpenMP when the compiler has it.

OpenMP flags are found by compiling and linking a small probe with each
candidate for the compiler in use (gcc, clang with libomp, MSVC).  Without
OpenMP the extension still builds and runs serially, with a loud warning;
SOFTMAX_EXT_REQUIRE_OPENMP=1 turns that warning into an error (CI sets it).

Release builds carry no debug information (-g0: the extension is about a
quarter of the size) and no run-time search path into the build machine's
Python; SOFTMAX_EXT_DEBUG=1 keeps the debug information.

Never -ffast-math (it removes the inf/NaN handling the kernels promise) and
never -march=native (wheels must run on any x86-64): wider instruction sets
come from the runtime dispatch in src/row_kernels.h.
"""

import os
import shlex
import shutil
import sys
import tempfile
import textwrap

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
    }
    """
)

# (compile flags, link flags) to try, in order, per compiler family.
OPENMP_CANDIDATES = {
    "msvc": [(["/openmp:llvm"], []), (["/openmp"], [])],
    "gcc": [(["-fopenmp"], ["-fopenmp"])],
    "clang": [
        (["-fopenmp"], ["-fopenmp"]),
        (["-fopenmp=libomp"], ["-fopenmp=libomp"]),
        (["-Xpreprocessor", "-fopenmp"], ["-lomp"]),  # Apple clang + Homebrew libomp
    ],
}

# Strict IEEE semantics are kept; these two only drop errno and FP-trap
# bookkeeping, which lets gcc vectorise the branch-free exp.
UNIX_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
# Loops start on a 64-byte cache line, so that a kernel's speed does not hang
# on the size of unrelated code before it (a change that only moved the exp
# loop cost 5-10 % on rows of 32000 floats); taken where the compiler has it.
LOOP_ALIGNMENT = ["-falign-loops=64"]
MSVC_FLAGS = ["/O2", "/fp:precise"]


def _environment_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _compiler_family(compiler) -> str:
    if compiler.compiler_type == "msvc":
        return "msvc"
    cc = " ".join(getattr(compiler, "compiler", None) or [os.environ.get("CC", "cc")])
    if "clang" in cc or sys.platform == "darwin":
        return "clang"
    return "gcc"


def _links(compiler, source: str, compile_args, link_args) -> bool:
    """Compile and link `source` as the extension would be: with the user's
    CFLAGS and LDFLAGS too (an -fsanitize build must link its probe with
    -fsanitize, or the probe fails and the build silently turns serial)."""
    compile_args = compile_args + shlex.split(os.environ.get("CFLAGS", ""))
    link_args = link_args + shlex.split(os.environ.get("LDFLAGS", ""))
    tmp = tempfile.mkdtemp(prefix="sx-probe-")
    try:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        objects = compiler.compile([path], output_dir=tmp, extra_postargs=compile_args)
        compiler.link_executable(
            objects, "probe", output_dir=tmp, extra_postargs=link_args
        )
        return True
    except Exception:  # any compile or link failure means "not available"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExtWithOpenMP(build_ext):
    def build_extensions(self):
        family = _compiler_family(self.compiler)
        compile_args = list(MSVC_FLAGS if family == "msvc" else UNIX_FLAGS)
        link_args = []
        openmp = None
        for flags, libs in OPENMP_CANDIDATES[family]:
            if _links(self.compiler, OPENMP_PROBE, flags, libs):
                openmp = (flags, libs)
                break
        if openmp is None:
            message = (
                "softmax_ext: OpenMP was NOT found for the %s compiler; building the "
                "kernels SERIAL (single-threaded)." % family
            )
            if _environment_flag("SOFTMAX_EXT_REQUIRE_OPENMP"):
                raise RuntimeError(message + " SOFTMAX_EXT_REQUIRE_OPENMP is set: failing.")
            bar = "!" * 78
            print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr)
            if family != "msvc":
                compile_args.append("-fopenmp-simd")  # keeps `omp simd` vectorisation
        else:
            compile_args += openmp[0]
            link_args += openmp[1]
            print(f"softmax_ext: OpenMP flags {openmp[0]} {openmp[1]}")
        if family != "msvc" and _links(self.compiler, "int main(void) { return 0; }\n",
                                       LOOP_ALIGNMENT, []):
            compile_args += LOOP_ALIGNMENT
        if family != "msvc":
            # Python's own CFLAGS often say -g; the last -g option given wins
            compile_args.append("-g" if _environment_flag("SOFTMAX_EXT_DEBUG") else "-g0")
            # An interpreter built with an rpath to its own lib folder passes
            # it on in LDSHARED; an extension module needs none of it.
            self.compiler.linker_so = [arg for arg in self.compiler.linker_so
                                       if not arg.startswith(("-Wl,-rpath", "-Wl,-R"))]
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
        super().build_extensions()


extensions = [
    Extension(
        "softmax_ext._kernels",
        sources=["src/_kernels.pyx"],
        include_dirs=["src"],
        depends=["src/row_kernels.h", "src/row_kernels_impl.h", "src/col_kernels_impl.h",
                 "src/exp_lanes_impl.h", "src/tile_transpose_impl.h", "src/sx_instantiate.h",
                 "src/half_convert_impl.h", "src/omp_shim.h"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
