"""The network's state dict equals the official one: keys, order, shapes, dtypes.

Full-size released configs are built on the meta device (no memory, no time); the reduced golden
configs are built for real and also checked against the golden checkpoints' own tensors.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model import build_model

from network_golden import config_from_json, load_state


def spec_dir(golden: Path) -> Path:
    path = golden.parent / "spec"
    if not (path / "keys-MVD.txt").is_file():
        raise RuntimeError(f"key tables not found at {path}")
    return path


def parse_table(path: Path) -> tuple[list[tuple[str, tuple[int, ...], str]], dict[str, int]]:
    """Rows (key, shape, dtype) in file order, and the header's counts."""
    rows, header = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            m = re.match(r"# (\d+) entries; parameters=(\d+); buffer elements=(\d+)", line)
            if m:
                header = dict(zip(("entries", "parameters", "buffers"), map(int, m.groups())))
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
        rows.append((key, dims, dtype))
    return rows, header


def key_table(state: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], str]]:
    """A state dict as table rows (key, shape, dtype), in its order."""
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]


@pytest.mark.parametrize("variant, factory", [("MVD", ModelConfig.released_mvd),
                                              ("MVDp", ModelConfig.released_mvdp)])
def test_released_config_matches_official_key_table(golden: Path, variant: str, factory) -> None:
    rows, header = parse_table(spec_dir(golden) / f"keys-{variant}.txt")
    with torch.device("meta"):
        model = build_model(factory())
    assert key_table(model.state_dict()) == rows
    assert len(rows) == header["entries"]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == header["parameters"]
    assert sum(b.numel() for b in model.buffers()) == header["buffers"]


@pytest.mark.parametrize("variant, kind", [("MVD", "mvd"), ("MVDp", "mvdp")])
def test_reduced_golden_config_matches_table_and_checkpoint(golden: Path, variant: str,
                                                            kind: str) -> None:
    rows, _ = parse_table(spec_dir(golden) / f"keys-{variant}_reduced_golden.txt")
    model = build_model(config_from_json(golden / f"{kind}_reduced_config.json"))
    assert key_table(model.state_dict()) == rows
    state = load_state(golden / f"{kind}_reduced_ckpt.pth")
    assert key_table(state) == rows
    model.load_state_dict(state, strict=True)


def test_fresh_multi_ref_model_starts_as_independent_paths() -> None:
    """Official init: cross-reference blocks' output layers and the last skip conv are zero."""
    model = build_model(ModelConfig(enc_embed_dim=64, enc_depth=1, enc_num_heads=1,
                                    dec_embed_dim=64, dec_depth=2, dec_num_heads=1, skip_dim=8,
                                    gs_mlp_dim=8, multi_ref=True, n_ref=2))
    assert model.dec_same_view_blocks is not None
    for blk in model.dec_same_view_blocks:
        for lin in (blk.attn.proj, blk.cross_attn.proj, blk.mlp.fc2):
            assert not lin.weight.any() and not lin.bias.any()
    assert not model.downstream_head1.skip_proj[3].conv.weight.any()
    assert model.dec_blocks[0].attn.qkv.weight.std() > 0
