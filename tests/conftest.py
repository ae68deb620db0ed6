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


# The tiny synthetic run the end-to-end tests share (two epochs in about 0.3 s on 2 CPU cores); a test that needs
# other values passes them to ``tiny_config``, a test module that needs them throughout overrides the fixture.
TINY = dict(dataset="synthetic", imbalance=10, n_max=60, epochs=2, batch_size=32, width=8, lr=0.05)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(**overrides)``: the ``TrainConfig`` of the tiny synthetic run, ``overrides`` on top."""
    from longtail.train import TrainConfig

    def make(**overrides):
        return TrainConfig(**{**TINY, **overrides})

    return make


@pytest.fixture(scope="module")
def synthetic_data(tiny_config):
    """The tiny run's data, prepared once per module on the CPU (pass it as ``train(..., data=synthetic_data)``)."""
    from longtail.train import prepare_data

    return prepare_data(tiny_config(), torch.device("cpu"))


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
