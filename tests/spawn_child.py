"""Imported by a spawned child in tests/test_ecosystem.py: a module that imports gpulog at top
level, as a training script does (spawned workers re-import it)."""
import gpulog  # noqa: F401  - honours GPULOG_PATCH=1 inherited from the parent


def child(path: str) -> None:
    from torch.utils.tensorboard import SummaryWriter
    import tensorboardX
    assert SummaryWriter is gpulog.SummaryWriter, SummaryWriter
    assert tensorboardX.SummaryWriter is gpulog.SummaryWriter, tensorboardX.SummaryWriter
    with SummaryWriter(path) as w:
        w.add_scalar("from_child", 1.0, 0)
