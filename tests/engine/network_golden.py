"""Golden cases for the network tests: reduced official checkpoints, inputs, outputs, intermediates.

The golden checkpoints go through the engine's real loader (``checkpoint.load_model``: safe
unpickling, config inferred from the file), into a per-session cache folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mvdust3r_blender.engine.checkpoint import load_model, read_checkpoint
from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model import MultiViewModel

CASES = {"mvd_b2_v4_64x64": "mvd", "mvdp_b2_v4_48x48": "mvdp"}


@dataclass
class GoldenCase:
    name: str
    checkpoint: Path
    cache_dir: Path
    config: ModelConfig                # from the golden *_reduced_config.json
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    outputs_train_bn: dict[str, np.ndarray]
    intermediates: dict[str, np.ndarray]

    @property
    def num_views(self) -> int:
        return sum(1 for k in self.inputs if k.endswith(".img"))

    def views(self) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        views = [{"img": torch.from_numpy(self.inputs[f"view{v}.img"]),
                  "true_shape": torch.from_numpy(self.inputs[f"view{v}.true_shape"])}
                 for v in range(self.num_views)]
        return views[0], views[1:]

    def model(self) -> MultiViewModel:
        """A fresh model (eval mode) loaded from the golden checkpoint."""
        model = load_model(self.checkpoint, cache_dir=self.cache_dir)
        assert model.config == self.config and not model.training
        return model


def config_from_json(path: Path) -> ModelConfig:
    """ModelConfig of a golden ``*_reduced_config.json`` (constructor kwargs + hard-coded widths)."""
    raw = json.loads(path.read_text())
    over = raw["_hardcoded_overrides"]
    return ModelConfig(
        enc_embed_dim=raw["enc_embed_dim"], enc_depth=raw["enc_depth"],
        enc_num_heads=raw["enc_num_heads"], dec_embed_dim=raw["dec_embed_dim"],
        dec_depth=raw["dec_depth"], dec_num_heads=raw["dec_num_heads"],
        skip_dim=over["LinearPts3d.skip_dim"], gs_mlp_dim=over["GSHead.mlp_dim"],
        sh_degree=raw["sh_degree"], multi_ref=bool(raw.get("m_ref_flag", False)),
        n_ref=int(raw.get("n_ref") or 1), img_size=tuple(raw["img_size"]))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict stored in an official checkpoint file (safe reader, memory-mapped)."""
    return read_checkpoint(path).state_dict


def load_case(golden: Path, name: str, cache_dir: Path) -> GoldenCase:
    kind = CASES[name]

    def npz(suffix: str) -> dict[str, np.ndarray]:
        with np.load(golden / f"{name}.{suffix}.npz") as f:
            return {k: f[k] for k in f.files}

    return GoldenCase(
        name=name, checkpoint=golden / f"{kind}_reduced_ckpt.pth", cache_dir=cache_dir,
        config=config_from_json(golden / f"{kind}_reduced_config.json"), inputs=npz("inputs"),
        outputs=npz("outputs"), outputs_train_bn=npz("outputs_trainmode_bn"),
        intermediates=npz("intermediates"))


def flatten_outputs(res1: dict[str, torch.Tensor],
                    res2s: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """``res1, res2s`` -> the golden file's flat names (``pred1.pts3d``, ``pred2s.0.conf`` ...)."""
    flat = {f"pred1.{k}": v.detach().numpy() for k, v in res1.items()}
    for i, res in enumerate(res2s):
        flat.update({f"pred2s.{i}.{k}": v.detach().numpy() for k, v in res.items()})
    return flat
