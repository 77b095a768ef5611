"""Hugging Face Trainer with muonlab.hf_optimizer: routed by muonlab's rules, logs the matrix part's lr, checkpoints
and resumes exactly."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import muonlab  # noqa: E402
from muonlab.integrations.hf import HFOptimizerFactory  # noqa: E402

STEPS, SAVE_AT, LR = 6, 3, 0.02


def _model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
    return transformers.GPT2LMHeadModel(config)


class Tokens(torch.utils.data.Dataset):
    def __init__(self):
        gen = torch.Generator().manual_seed(0)   # counting sequences: next token = this one + 1 (learnable)
        self.ids = (torch.randint(0, 64, (32, 1), generator=gen) + torch.arange(16)) % 64

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(out, model):
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=STEPS, save_steps=SAVE_AT, save_strategy="steps",
        logging_steps=1, report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=Tokens(),
                                optimizer_cls_and_kwargs=muonlab.hf_optimizer(lr=LR, adamw_lr=3e-3))


def test_the_factory_routes_by_muonlab_rules_and_group_0_is_the_matrix_part():
    model = _model()
    factory, kwargs = muonlab.hf_optimizer(lr=LR, optimizer="normuon", disable=("fused",))
    opt = factory()(model, **kwargs)
    assert isinstance(opt, muonlab.NorMuon)
    assert muonlab.integrations.is_spectral(opt.param_groups[0]) and opt.param_groups[0]["lr"] == LR
    by_name = {n: g for g in opt.param_groups for n in g["param_names"]}
    assert by_name["transformer.wte.weight"]["kind"] == "head"          # tied: AdamW, not spectral
    assert by_name["transformer.h.0.attn.c_attn.weight"]["transposed"] is True
    assert by_name["transformer.h.0.attn.c_attn.weight"].get("split_sizes") is None   # disable= reached routing
    with pytest.raises(TypeError, match="optimizer factories"):
        HFOptimizerFactory([{"params": list(model.parameters())}], lr=LR)   # an old Trainer's call
    with pytest.raises(ValueError, match="unknown optimizer name"):
        muonlab.hf_optimizer(optimizer="muonn")


def test_trainer_trains_logs_the_matrix_lr_and_resumes_exactly(tmp_path):
    full = _trainer(tmp_path / "full", _model())
    full.train()
    assert isinstance(full.optimizer.optimizer if hasattr(full.optimizer, "optimizer") else full.optimizer,
                      muonlab.Muon)
    logged = [entry["learning_rate"] for entry in full.state.log_history if "learning_rate" in entry]
    # the default linear schedule from the matrix part's peak (the AdamW part's 3e-4 is not what is logged)
    assert logged == pytest.approx([LR * (STEPS - s) / STEPS for s in range(STEPS)])
    losses = [entry["loss"] for entry in full.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]

    resumed = _trainer(tmp_path / "resumed", _model())
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{SAVE_AT}"))
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
