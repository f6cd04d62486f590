#!/usr/bin/env bash
# Build tests/native/harness.c (the C row primitives, no Python) and run it:
#   host      with the host's cc and OpenMP (portable, avx2, avx512 on x86-64);
#   aarch64   cross-compiled with Debian's gcc-aarch64-linux-gnu (OpenMP) and,
#             when clang is installed, clang --target=aarch64-linux-gnu (the
#             compiler family of the macOS arm64 wheels; no aarch64 libomp
#             here, so serial), run under qemu-aarch64 (Debian's qemu-user);
#   msvc      a syntax check of the kernels' C as MSVC sees it (clang in MSVC
#             mode with __clang__ undefined, stand-ins for two CRT headers):
#             no GNU attribute or builtin may leak into that branch.  It
#             compiles nothing to run; MSVC itself is not available here.
# Missing cross tools are installed with apt-get when it is there and we are
# root; otherwise that part is skipped with a loud message.
# Usage: tests/native/run.sh [host] [aarch64] [msvc]   (all by default)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
harness="$repo/tests/native/harness.c"
flags=(-O3 -fno-math-errno -fno-trapping-math -falign-loops=64 -I"$repo/src")  # as setup.py builds the kernels
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(host aarch64 msvc)

skip_loudly() {
    local bar
    bar=$(printf '!%.0s' {1..78})
    printf '\n%s\nSKIPPED: %s\n%s\n\n' "$bar" "$1" "$bar"
}

for target in "${targets[@]}"; do
    case "$target" in
    host)
        echo "== harness on the host ($(uname -m), ${CC:-cc})"
        "${CC:-cc}" "${flags[@]}" -fopenmp "$harness" -o "$work/harness-host" -lm
        "$work/harness-host"
        ;;
    aarch64)
        if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
            if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
                echo "== installing gcc-aarch64-linux-gnu and qemu-user with apt-get"
                apt-get update -q >/dev/null
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-aarch64-linux-gnu qemu-user >/dev/null
            else
                skip_loudly "aarch64 harness: no aarch64-linux-gnu-gcc / qemu-aarch64 and no apt-get as root to install them"
                continue
            fi
        fi
        export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
        echo "== harness for aarch64: gcc + OpenMP, under qemu-aarch64 (every float32 for exp)"
        aarch64-linux-gnu-gcc "${flags[@]}" -fopenmp "$harness" -o "$work/harness-gcc" -lm
        qemu-aarch64 "$work/harness-gcc"
        if command -v clang >/dev/null; then
            echo "== harness for aarch64: clang (serial), under qemu-aarch64 (every 16th float32 for exp)"
            clang --target=aarch64-linux-gnu "${flags[@]}" -fopenmp-simd -c "$harness" -o "$work/harness-clang.o"
            aarch64-linux-gnu-gcc "$work/harness-clang.o" -o "$work/harness-clang" -lm
            qemu-aarch64 "$work/harness-clang" --best-exp-stride 16
        else
            skip_loudly "aarch64 harness with clang: clang is not installed"
        fi
        ;;
    msvc)
        if ! command -v clang >/dev/null; then
            skip_loudly "MSVC-mode syntax check: clang is not installed"
            continue
        fi
        echo "== the kernels' C as MSVC sees it (clang --target=x86_64-pc-windows-msvc, syntax only)"
        clang --target=x86_64-pc-windows-msvc -fms-extensions -fms-compatibility -ffreestanding \
            -U__clang__ -Wno-builtin-macro-redefined -Werror -I"$repo/tests/native/msvc_crt" \
            -I"$repo/src" -fsyntax-only "$repo/tests/native/msvc_probe.c"
        echo "ok: the MSVC branch of src/row_kernels.h compiles"
        ;;
    *)
        echo "unknown target $target (expected host, aarch64 or msvc)" >&2
        exit 2
        ;;
    esac
done
