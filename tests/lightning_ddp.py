"""Lightning DDP on CPU with two processes, logging through gpulog.patch() (run as a script by
tests/test_distributed.py: Lightning re-executes this file for rank 1).

Usage: python lightning_ddp.py SAVE_DIR plain|forward   (forward: distributed=True passed to the
rank-0-only TensorBoardLogger, which must fail fast with advice, not hang)."""
import os, sys, time
import gpulog
gpulog.patch()
import torch
import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

class M(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
    def training_step(self, batch, i):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("loss", loss, sync_dist=True)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

if __name__ == "__main__":
    save, mode = sys.argv[1], sys.argv[2]
    kw = {"distributed": True, "distributed_timeout": 5} if mode == "forward" else {}
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g))
    dl = torch.utils.data.DataLoader(ds, batch_size=8)
    logger = TensorBoardLogger(save, name="", version=0, log_graph=False, **kw)
    t = time.monotonic()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=10, logger=logger,
                        enable_progress_bar=False, enable_checkpointing=False, log_every_n_steps=1,
                        enable_model_summary=False)
    trainer.fit(M(), dl)
    print("fit-done", trainer.global_rank, time.monotonic() - t, flush=True)
