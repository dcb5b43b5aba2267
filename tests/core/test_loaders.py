"""SAM and CLIP checkpoints: architecture from weights, formats, safety, errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_slip.core.errors import CheckpointError, InputError
from napari_slip.core.models.clip import (
    build_clip,
    load_clip_checkpoint,
    read_clip_metadata,
    save_clip_checkpoint,
)
from napari_slip.core.models.registry import load_clip_model, resolve_clip
from napari_slip.core.models.sam import SamConfig, build_sam, load_sam, sam_config_from_state_dict
from napari_slip.testing import TINY_CLIP, TINY_SAM

from ..floats import assert_close

OFFICIAL = {
    "vit_b": SamConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": SamConfig(
        embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_h": SamConfig(
        embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
    ),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_architectures_are_read_from_weights(name):
    # Meta-device weights have the real shapes and cost no memory.
    with torch.device("meta"):
        state = build_sam(OFFICIAL[name]).state_dict()
    assert sam_config_from_state_dict(state) == OFFICIAL[name]


def test_tiny_sam_round_trips_through_a_pth_file(tiny_sam_path):
    sam, config = load_sam(tiny_sam_path)
    assert config == TINY_SAM
    assert sam.image_encoder.img_size == 256
    reference = torch.load(tiny_sam_path, weights_only=True)
    for key, value in sam.state_dict().items():
        if key in reference:
            assert torch.equal(value, reference[key]), key


def test_wrapped_and_prefixed_and_safetensors_sam_files_load(tiny_sam_path, tmp_path):
    state = torch.load(tiny_sam_path, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model_state": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    assert load_sam(wrapped)[1] == TINY_SAM
    safe = tmp_path / "sam.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    assert load_sam(safe)[1] == TINY_SAM


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/napari_slip_pwned",))


def test_loading_never_executes_code_from_a_file(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"image_encoder.pos_embed": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="Could not read"):
        load_sam(evil)
    import os

    assert not os.path.exists("/tmp/napari_slip_pwned")


def test_non_sam_weights_are_refused_clearly(tmp_path, tiny_clip_path):
    path = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a Segment Anything checkpoint"):
        load_sam(path)


def test_clip_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path):
    torch.manual_seed(1)
    model = build_clip(TINY_CLIP)
    path = save_clip_checkpoint(
        model,
        TINY_CLIP,
        tmp_path / "c.safetensors",
        {
            "base_model": "tiny",
            "class_names": ["a", "b"],
            "prompt_template": "a micrograph of {}.",
        },
    )
    meta = read_clip_metadata(path)
    assert meta["open_clip_config"] == TINY_CLIP
    assert meta["class_names"] == ["a", "b"] and meta["base_model"] == "tiny"
    loaded = load_clip_checkpoint(path)
    crops = [np.full((20, 20, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            model.encode_image(loaded.preprocess(crops)), dim=-1
        ).numpy()
    assert_close(loaded.encode_images(crops), expected, terms=32, depth=4)  # the tiny CLIP
    texts = loaded.encode_texts(["a cell", "a dog"])
    assert texts.shape == (2, 32)
    assert_close(np.linalg.norm(texts, axis=1), np.ones(2), terms=32)
    assert loaded.metadata["prompt_template"] == "a micrograph of {}."


def test_any_open_clip_architecture_loads_from_our_format(tmp_path):
    other = json.loads(json.dumps(TINY_CLIP))
    other["vision_cfg"].update(layers=2, image_size=48, patch_size=16)
    other["text_cfg"].update(layers=2, width=48, heads=4)
    other["embed_dim"] = 24
    path = save_clip_checkpoint(build_clip(other), other, tmp_path / "o.safetensors")
    clip = load_clip_model(str(path)).clip
    assert clip.image_size == 48 and clip.encode_texts(["x"]).shape == (1, 24)


def test_clip_files_without_our_metadata_or_with_wrong_weights_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="open_clip_config"):
        load_clip_checkpoint(plain)
    wrong = tmp_path / "wrong.safetensors"
    save_file(
        {"w": torch.zeros(1)}, str(wrong), metadata={"open_clip_config": json.dumps(TINY_CLIP)}
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_clip_checkpoint(wrong)


def test_clip_names_are_checked_before_any_download():
    with pytest.raises(InputError, match="MODEL:TAG"):
        resolve_clip("ViT-B-32")
    with pytest.raises(InputError, match="Unknown open_clip model"):
        resolve_clip("ViT-Nope:foo")
    with pytest.raises(InputError, match="known tags"):
        resolve_clip("ViT-B-32:not_a_tag")
    with pytest.raises(InputError, match="does not exist"):
        resolve_clip("/no/such/file.safetensors")


def test_named_clip_uses_weights_placed_in_the_cache_by_hand(isolated_cache, tmp_path):
    """The offline route: put the file where the error message says, then load by name."""
    import open_clip

    from napari_slip.core.models.clip import load_open_clip

    # A tiny architecture registered under a name stands in for a real pretrained model.
    open_clip.factory._MODEL_CONFIGS["Tiny-Test"] = json.loads(json.dumps(TINY_CLIP))
    open_clip.pretrained._PRETRAINED["Tiny-Test"] = {
        "t1": open_clip.pretrained._pcfg(hf_hub="example/tiny-test/")
    }
    try:
        torch.manual_seed(2)
        model = build_clip(TINY_CLIP)
        folder = isolated_cache / "clip" / "Tiny-Test__t1"
        folder.mkdir(parents=True)
        save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
        name, path, pcfg = resolve_clip("Tiny-Test:t1")
        assert (name, path) == ("Tiny-Test", folder / "open_clip_model.safetensors")
        clip = load_open_clip(name, path, pcfg)
        assert clip.encode_texts(["cell"]).shape == (1, 32)
    finally:
        del open_clip.factory._MODEL_CONFIGS["Tiny-Test"]
        del open_clip.pretrained._PRETRAINED["Tiny-Test"]


def test_each_sam_encoder_family_is_one_row_that_reads_back_what_it_builds():
    """``SAM_ENCODERS`` is the one table of SAM families: a state dict is recognised by
    its family's marker weight and read back into the architecture it was built from."""
    from napari_slip.core.models.sam import (
        SAM_ENCODERS,
        build_sam,
        sam_config_from_state_dict,
    )
    from napari_slip.testing.tiny import TINY_EFFICIENTVIT_SAM, TINY_MOBILE_SAM, TINY_SAM

    tiny = {"vit": TINY_SAM, "tinyvit": TINY_MOBILE_SAM, "efficientvit": TINY_EFFICIENTVIT_SAM}
    assert set(SAM_ENCODERS) == set(tiny)
    for name, config in tiny.items():
        state = build_sam(config).state_dict()
        marker = SAM_ENCODERS[name].marker
        assert marker is None or marker in state
        read = sam_config_from_state_dict(state)
        assert read.encoder == name and read == config, name
    with pytest.raises(CheckpointError, match="Unknown SAM image encoder"):
        build_sam(SamConfig(encoder="resnet"))
