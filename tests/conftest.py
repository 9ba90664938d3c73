"""Setup shared by every test module."""

import os

import torch

# pytest-xdist runs one worker process per core (`-n 2` on CI's 2 cores).  With torch's default
# thread pool each worker would use every core, and small tensor ops then wait on each other's
# threads: a branch-and-bound run of `test_bab_agrees_with_exact_milp` measured 26.3 s against
# 3.4 s with one thread per worker, enough to run its 20 s budget out.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
