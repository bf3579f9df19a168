"""Run a real framework's TensorBoard logging on a tiny CPU model, through torch's writer or
(``--gpulog``) through gpulog via ``gpulog.patch()``; used by test_frameworks.py in subprocesses
so each run imports the framework fresh.

    python framework_run.py lightning|hf|ignite|accelerate LOGDIR [--gpulog] [--watch]

``--watch``: also ``gpulog.SummaryWriter("watch").watch(model, every=2)`` on the framework's model
(the loop unchanged), and ``watch_oracle.json``: the gradient norms numpy computes in an optimizer
step *post*-hook of its own (SGD leaves ``.grad`` as the step used it, and after step() a
closure has run), for the test to compare.
"""
from __future__ import annotations

import sys

import torch

framework, logdir = sys.argv[1], sys.argv[2]
if "--gpulog" in sys.argv:
    import gpulog
    gpulog.patch()
torch.manual_seed(0)
WATCH = "--watch" in sys.argv


def watch(model: torch.nn.Module) -> None:
    """Watch the model the framework trains, as a user would, without touching the loop."""
    if not WATCH:
        return
    import atexit
    import json

    import numpy as np

    import gpulog
    from torch.optim.optimizer import register_optimizer_step_post_hook
    w = gpulog.SummaryWriter("watch")
    w.watch(model, every=2)
    seen: list = []
    params = {id(p) for p in model.parameters()}

    def record(optimizer, args, kwargs):
        if any(id(p) in params for g in optimizer.param_groups for p in g["params"]):
            seen.append({n: float(np.linalg.norm(p.grad.detach().double().numpy()))
                         for n, p in model.named_parameters()})
    register_optimizer_step_post_hook(record)

    def done() -> None:
        w.close()
        with open("watch_oracle.json", "w") as fh:
            json.dump(seen, fh)
    atexit.register(done)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


X = torch.randn(64, 4)
Y = X.sum(dim=1, keepdim=True)


def lightning() -> None:
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Tiny()
            self.example_input_array = torch.randn(2, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=8)
    logger = TensorBoardLogger(logdir, name="", version="run", log_graph=True)
    trainer = L.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        devices=1)
    module = Module()
    watch(module)
    trainer.fit(module, data)
    print("writer:", type(logger.experiment).__module__)


def hf() -> None:
    from transformers import Trainer, TrainingArguments

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Tiny()

        def forward(self, x=None, labels=None):
            out = self.net(x)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(X)

        def __getitem__(self, i: int):
            return {"x": X[i], "labels": Y[i]}

    import os
    os.environ["TENSORBOARD_LOGGING_DIR"] = logdir  # transformers 5 (logging_dir= before)
    import inspect
    old = {"logging_dir": logdir} if "logging_dir" in inspect.signature(TrainingArguments).parameters else {}
    args = TrainingArguments(output_dir=logdir + "/out", report_to=["tensorboard"], **old,
                             logging_steps=1, max_steps=6, per_device_train_batch_size=8,
                             use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0,
                             dataloader_num_workers=0)
    model = Model()
    watch(model)
    trainer = Trainer(model=model, args=args, train_dataset=Data())
    trainer.train()
    cb = [c for c in trainer.callback_handler.callbacks if type(c).__name__ == "TensorBoardCallback"]
    print("writer:", cb[0]._SummaryWriter.__module__)


def ignite() -> None:
    from ignite.engine import Events, create_supervised_trainer
    from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger

    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = create_supervised_trainer(model, opt, torch.nn.functional.mse_loss)
    tb = TensorboardLogger(log_dir=logdir)
    tb.attach(trainer, log_handler=OutputHandler(tag="training", output_transform=lambda loss: {"loss": loss}),
              event_name=Events.ITERATION_COMPLETED)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=8)
    trainer.run(data, max_epochs=2)
    tb.close()
    print("writer:", type(tb.writer).__module__)


def accelerate() -> None:
    from accelerate import Accelerator

    acc = Accelerator(log_with="tensorboard", project_dir=logdir, cpu=True)
    acc.init_trackers("run", config={"lr": 0.05, "batch": 8, "opt": "sgd"})
    model = Tiny()
    watch(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model, opt = acc.prepare(model, opt)
    for step in range(6):
        x, y = X[step * 8:(step + 1) * 8], Y[step * 8:(step + 1) * 8]
        loss = torch.nn.functional.mse_loss(model(x), y)
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        acc.log({"train/loss": loss.item(), "lr": 0.05}, step=step)
    writer = acc.get_tracker("tensorboard", unwrap=True)
    print("writer:", type(writer).__module__)
    acc.end_training()


{"lightning": lightning, "hf": hf, "ignite": ignite, "accelerate": accelerate}[framework]()
