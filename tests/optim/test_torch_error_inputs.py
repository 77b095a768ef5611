"""A drop-in for torch.optim.Muon raises torch's error types with torch's messages on torch's own error inputs.

The inputs are those of PyTorch's OptimizerInfo for Muon (``get_error_inputs_for_all_optims`` in
torch/testing/_internal/common_optimizers.py, written out here because importing that module needs
``expecttest``). Each case is run through torch.optim.Muon *and* muonlab.Muon on fresh objects (torch's
add_param_group fills the dicts it is given in place), and muonlab's message must contain torch's.

Two of torch's Muon-specific inputs differ on purpose: a 3-D parameter (torch: "Muon only supports 2D parameters";
muonlab flattens or batches it, README) and a complex parameter (torch: RuntimeError at the first step; muonlab:
ValueError naming the parameter at construction, before any work). So do two of the generic ones: a group with
names after one without, and one without after one with (torch: "all optimizer param groups should be with/without
names"; muonlab generates the missing names, because frameworks add unnamed groups to optimizers built from
``param_groups(model)``: tests/optim/test_group_traps.py).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch.nn import Parameter

import muonlab


def _cases():
    a, b = Parameter(torch.randn(1, 1)), Parameter(torch.randn(1, 1))
    return {
        "single tensor as params": (a, {}),
        "duplicate parameters in one group (a warning)": ([a, a], {}),
        "a parameter in two groups": ([{"params": a}, {"params": a}], {}),
        "2-element tensor lr": ([a], {"lr": torch.tensor([0.001, 0.001])}),
        "named and unnamed params mixed": ([("weight", a), b], {}),
        "empty parameter list": ([], {}),
        "non-leaf tensor": ([a * 2], {}),
        "unknown adjust_lr_fn (torch's Muon-specific input)": ([a], {"adjust_lr_fn": "arbitrary"}),
    }


def _outcome(cls, case):
    params, kwargs = _cases()[case]   # fresh tensors and dicts for each optimizer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cls(params, **kwargs)
        except Exception as err:  # noqa: BLE001 - the error itself is what is compared
            return type(err), str(err)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return UserWarning if messages else None, " ".join(messages)


@pytest.mark.parametrize("case", list(_cases()))
def test_muonlab_muon_raises_what_torch_muon_raises(case):
    torch_type, torch_message = _outcome(torch.optim.Muon, case)
    ours_type, ours_message = _outcome(muonlab.Muon, case)
    assert torch_type is not None, f"torch.optim.Muon accepts {case!r}: the case list is out of date"
    assert ours_type is torch_type, f"{case}: torch raises {torch_type.__name__}, muonlab {ours_type}: {ours_message}"
    assert re.search(re.escape(torch_message), ours_message), f"{case}: {ours_message!r} lacks {torch_message!r}"


def test_groups_with_and_without_names_mix_where_torch_refuses():
    a, b = Parameter(torch.randn(2, 2)), Parameter(torch.randn(2, 2))
    for groups in ([{"params": [a], "lr": 1e-2}, {"params": [("weight", b)]}],
                   [{"params": [("weight", b)]}, {"params": [a]}]):
        with pytest.raises(ValueError, match="with/without names"):
            torch.optim.Muon([dict(g) for g in groups])
        opt = muonlab.Muon(groups)
        assert all(len(g["param_names"]) == len(g["params"]) for g in opt.param_groups)


def test_a_one_element_tensor_lr_is_accepted_as_by_torch():
    p = Parameter(torch.randn(3, 2))
    for cls in (torch.optim.Muon, muonlab.Muon):
        cls([p], lr=torch.tensor(0.01))
    with pytest.raises(ValueError, match=r"param group 0 \(matrix\): Tensor lr must be 1-element, got shape \(3,\)"):
        muonlab.Muon([{"params": [p], "lr": torch.ones(3)}])
