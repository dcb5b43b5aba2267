"""Loading a checkpoint builds the model without drawing random weights first: every
parameter and buffer (non-persistent ones included) as a normal build loaded from the
same file has them; other threads unaffected."""

from __future__ import annotations

import threading

import pytest
import torch

from napari_slip.core.models.clip import build_clip, load_clip_checkpoint
from napari_slip.core.models.no_init import skip_random_init
from napari_slip.core.models.sam import build_sam, load_sam, sam_config_from_state_dict
from napari_slip.testing import TINY_CLIP
from napari_slip.testing.tiny import (
    write_tiny_clip,
    write_tiny_efficientvit_sam,
    write_tiny_mobile_sam,
    write_tiny_sam,
)


def _tensors(model: torch.nn.Module) -> dict:
    """Every parameter and buffer, non-persistent buffers included."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _assert_same(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    ours, theirs = _tensors(loaded), _tensors(reference)
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name


@pytest.mark.parametrize(
    "write", [write_tiny_sam, write_tiny_mobile_sam, write_tiny_efficientvit_sam]
)
def test_a_loaded_sam_is_a_normal_build_with_the_files_weights(tmp_path, write):
    path = write(tmp_path / "sam.pth", seed=3)
    state = torch.load(path, weights_only=True)
    loaded, _ = load_sam(path)
    reference = build_sam(sam_config_from_state_dict(state))
    reference.load_state_dict(state, strict=False)
    _assert_same(loaded, reference)


def test_a_loaded_clip_is_a_normal_build_with_the_files_weights(tmp_path):
    path = write_tiny_clip(tmp_path / "clip.safetensors", seed=4)
    loaded = load_clip_checkpoint(path)
    from safetensors.torch import load_file

    reference = build_clip(TINY_CLIP)
    reference.load_state_dict(load_file(str(path)))
    _assert_same(loaded.model, reference)


def test_skipping_applies_to_its_own_thread_only():
    """A model built in another thread meanwhile is initialised as usual."""
    inside, other = threading.Event(), {}

    def build_elsewhere() -> None:
        inside.wait(10)
        torch.manual_seed(0)
        other["weight"] = torch.nn.Linear(64, 64).weight.detach().clone()

    thread = threading.Thread(target=build_elsewhere)
    thread.start()
    with skip_random_init():
        skipped = torch.nn.Linear(64, 64).weight.detach().clone()
        inside.set()
        thread.join(10)
    torch.manual_seed(0)
    expected = torch.nn.Linear(64, 64).weight.detach()
    assert torch.equal(other["weight"], expected)  # Kaiming uniform, as always
    assert not torch.equal(skipped, expected)
    assert float(expected.abs().max()) > 0.05  # expected is a real random draw
