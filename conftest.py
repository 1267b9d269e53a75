"""What this repository's own test run needs beyond the installed plugin."""

import torch
from hypothesis import HealthCheck, settings

# The test models are tiny: intra-op threads only add spin-waits on a shared 2-core machine.
torch.set_num_threads(1)

# Model forward passes make example timings noisy on a shared CPU: no deadline.
settings.register_profile(
    "harness", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("harness")
