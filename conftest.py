"""What this repository's own test run needs: the harness's plugin, and quiet settings.

The plugin is opt-in (it registers ``--model``, ``--device``, ``--seeds`` and a ``subject``
fixture, which would collide with other projects' own): this rootdir conftest opts in, as any
other project does with the same line in its rootdir ``conftest.py`` or ``-p harness.plugin``.
"""

import torch
from hypothesis import HealthCheck, settings

pytest_plugins = ["harness.plugin"]

# The test models are tiny: intra-op threads only add spin-waits on a shared 2-core machine.
torch.set_num_threads(1)

# Model forward passes make example timings noisy on a shared CPU: no deadline. Examples are
# derandomized so every run (and CI) draws the same ones: the identity oracles compare sampled
# tokens from two computations of one distribution, and on a rare draw the seeded uniform lands
# within float32 rounding of a CDF boundary (measured: 4.7e-9 from it, phi3 mlp_out@27 on eq-04),
# where either token is right. A fixed set of examples keeps CI from failing on such a draw.
settings.register_profile(
    "harness", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("harness")
