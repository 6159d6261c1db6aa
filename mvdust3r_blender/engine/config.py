"""The shape of an MV-DUSt3R / MV-DUSt3R+ network, as read from a checkpoint.

One frozen dataclass describes both variants and every size (the released 224 models and the
reduced golden ones), so a single code path builds them all. Widths and depths come from
state-dict shapes; head counts and ``n_ref`` from the checkpoint's ``args.model`` string
(they cannot be read from shapes).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one network. Defaults are the released MV-DUSt3R (``MVD.pth``)."""

    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    patch_size: int = 16
    mlp_ratio: float = 4.0
    rope_freq: float = 100.0       # "RoPE100"
    skip_dim: int = 256            # point-head skip CNN width (hard-coded 256 in the official code)
    gs_mlp_dim: int = 768          # Gaussian-head MLP hidden width (hard-coded 768 officially)
    sh_degree: int = 0
    multi_ref: bool = False        # official ``m_ref_flag``: has ``dec_same_view_blocks``
    n_ref: int = 1                 # reference views; 1 for MV-DUSt3R, 4 for the released MV-DUSt3R+
    img_size: tuple[int, int] = (224, 224)  # the resolution it was trained at (H, W)

    @property
    def variant(self) -> str:
        """``"MVD"`` (MV-DUSt3R) or ``"MVDp"`` (MV-DUSt3R+)."""
        return "MVDp" if self.multi_ref else "MVD"

    @property
    def min_views(self) -> int:
        """Fewest input views a forward pass accepts (MV-DUSt3R+ indexes views 0..n_ref-1)."""
        return max(2, self.n_ref) if self.multi_ref else 2

    @classmethod
    def released_mvd(cls) -> "ModelConfig":
        """``MVD.pth``."""
        return cls()

    @classmethod
    def released_mvdp(cls) -> "ModelConfig":
        """``MVDp_s1.pth`` / ``MVDp_s2.pth`` (with the demo's ``n_ref=4``)."""
        return cls(multi_ref=True, n_ref=4)
