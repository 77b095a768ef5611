"""Lightning: a muonlab optimizer with a BaseFinetuning callback that unfreezes a backbone into a new param group
(added without names), checkpointed by ModelCheckpoint and resumed exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning.pytorch")

import muonlab  # noqa: E402

EPOCHS, UNFREEZE_AT = 4, 1


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.neck = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.neck(self.backbone(x))))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        # matrix_first: group 0 is the spectral part, whose lr BaseFinetuning divides for the groups it adds
        return muonlab.Muon(muonlab.param_groups(self, matrix_first=True), lr=0.02)


class Unfreeze(L.callbacks.BaseFinetuning):
    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module, epoch, optimizer):
        if epoch == UNFREEZE_AT:
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer)     # lr: group 0's / 10
        elif epoch > UNFREEZE_AT:
            # resumed after the unfreeze: Lightning restores the added groups but setup() froze the backbone again
            self.make_trainable(pl_module.backbone)


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen)
    y = (x[:, :4].argmax(dim=1))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=False)


def _trainer(root, epochs):
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(root), deterministic=True,
        callbacks=[Unfreeze(), L.callbacks.ModelCheckpoint(dirpath=str(root / "ckpt"), save_top_k=-1,
                                                           every_n_epochs=1, filename="{epoch}")],
    )


def test_finetuning_callback_adds_a_group_and_the_checkpoint_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    full = Net()
    trainer = _trainer(tmp_path / "full", EPOCHS)
    trainer.fit(full, _data())
    opt = trainer.optimizers[0]
    added = [g for g in opt.param_groups if any(n.startswith("group") for n in g["param_names"])]
    assert [g["kind"] for g in added] == ["matrix", "vector"]            # the backbone: its weights and biases
    assert added[0]["lr"] == pytest.approx(0.02 / 10)
    assert added[1]["lr"] == pytest.approx(3e-4)                        # the AdamW part keeps its own lr

    torch.manual_seed(1)
    resumed = Net()
    trainer = _trainer(tmp_path / "resumed", EPOCHS)
    trainer.fit(resumed, _data(), ckpt_path=str(tmp_path / "full" / "ckpt" / f"epoch={UNFREEZE_AT + 1}.ckpt"))
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
