"""A fixed-seed slice of the guard-buffer fuzzer (see tests/fuzz.py).

The long run is one command: ``python tests/fuzz.py --cases 20000 --seed 1``.
SOFTMAX_EXT_FUZZ_CASES sets how many cases this slice runs (default 1200).
"""

import os

import pytest

import fuzz

CASES = int(os.environ.get("SOFTMAX_EXT_FUZZ_CASES", "1200"))
BLOCK = 100


@pytest.mark.parametrize("first_seed", range(1, CASES + 1, BLOCK))
def test_guard_buffer_fuzz(first_seed):
    for seed in range(first_seed, min(first_seed + BLOCK, CASES + 1)):
        fuzz.run_case(seed)
