"""Suite-wide settings: one torch thread per test process.

The suite runs in two pytest-xdist workers on two cores; torch's default of one thread per
core in each worker oversubscribes the CPU and makes small training steps 10-100x slower.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
