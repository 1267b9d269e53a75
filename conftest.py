"""What this repository's own test run needs beyond the installed plugin."""

from hypothesis import HealthCheck, settings

# Model forward passes make example timings noisy on a shared CPU: no deadline.
settings.register_profile(
    "harness", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("harness")
