import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# CPU timings vary on a shared 2-core machine: no per-example deadline; the CI profile keeps runs short.
settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def interrupted(monkeypatch):
    """``interrupted(train, *args, at=k, **kwargs)``: runs ``train`` as a process killed when epoch ``k`` (0-based)
    starts, so epochs ``0..k-1`` are checkpointed and the rest is left for a resume."""
    import longtail.train.trainer as trainer

    real = trainer.train_one_epoch

    def run(train, *args, at, **kwargs):
        def stop(run_, epoch, progress=None):
            if epoch == at:
                raise KeyboardInterrupt
            return real(run_, epoch, progress)

        monkeypatch.setattr(trainer, "train_one_epoch", stop)
        try:
            with pytest.raises(KeyboardInterrupt):
                train(*args, **kwargs)
        finally:
            monkeypatch.setattr(trainer, "train_one_epoch", real)

    return run
