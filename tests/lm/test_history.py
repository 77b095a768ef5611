"""History: what the trainer records per step, and the plain dict checkpoints store (the format must not drift)."""

import math

import torch

from muonlab.tasks.lm.history import History

CHECKPOINT_KEYS = ["train_steps", "train_losses", "val_steps", "val_losses", "max_attn_logit_after_step",
                   "max_attn_logit_per_head", "train_time_s", "telemetry"]


def test_record_step_and_val_fill_the_curves():
    h = History()
    h.record_val(0, 5.5)
    logits = torch.tensor([[1.23456, 7.0], [-2.0, 3.33333]])
    h.record_step(1, 5.25, 0.5, logits)
    h.record_step(2, 5.0, 0.25, None)          # recording off: no logit entry for this step
    h.record_val(2, float("nan"))
    assert h.train_steps == [1, 2] and h.train_losses == [5.25, 5.0] and h.train_time_s == 0.75
    assert h.max_attn_logit_after_step == [7.0]
    assert h.max_attn_logit_per_head == [[1.2346, 7.0, -2.0, 3.3333]]   # row-major (layer, head), 4 decimals
    assert h.val_steps == [0, 2] and h.val_losses[0] == 5.5 and math.isnan(h.val_losses[1])


def test_to_dict_is_the_checkpoint_format_and_from_dict_reads_it_back():
    h = History()
    h.record_val(0, 4.0)
    h.record_step(1, 3.5, 0.125, torch.tensor([[2.0]]))
    d = h.to_dict()
    assert list(d) == CHECKPOINT_KEYS                      # the keys (and order) checkpoints and results.json hold
    assert all(type(v) in (list, float, dict) for v in d.values())   # plain data: loadable with weights_only=True
    assert History.from_dict(d) == h
    # a dict as an older checkpoint holds it (written before History existed) reads back field by field
    old = {"train_steps": [1, 2], "train_losses": [3.0, 2.5], "val_steps": [0, 2], "val_losses": [4.0, 2.75],
           "max_attn_logit_after_step": [], "max_attn_logit_per_head": [], "train_time_s": 1.5}
    back = History.from_dict(old)
    assert back.to_dict() == {**old, "telemetry": {}} and back.train_time_s == 1.5 and back.val_losses == [4.0, 2.75]


def test_record_telemetry_keeps_each_groups_curves():
    h = History()
    h.record_telemetry(1, None)  # torch's optimizers report nothing
    assert h.telemetry == {}
    group = lambda i, kind, rms, ortho: {"index": i, "kind": kind, "update_rms": rms, "orthogonality_error": ortho}
    h.record_telemetry(1, {"skipped_steps": 0, "state_bytes": 100,
                           "groups": [group(0, "matrix", 0.5, 0.1234567), group(1, "vector", None, None)]})
    h.record_telemetry(2, {"skipped_steps": 1, "state_bytes": 120,
                           "groups": [group(0, "matrix", 0.25, 0.2), group(1, "vector", None, None)]})
    t = h.telemetry
    assert t["steps"] == [1, 2] and t["skipped_steps"] == [0, 1] and t["state_bytes"] == 120
    assert t["update_rms"] == {"0:matrix": [0.5, 0.25], "1:vector": [None, None]}
    assert t["orthogonality_error"]["0:matrix"] == [0.123457, 0.2]
    assert History.from_dict(h.to_dict()) == h
