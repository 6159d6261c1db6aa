"""The MV-DUSt3R / MV-DUSt3R+ network (official ``AsymmetricCroCo3DStereoMultiView``).

Two entry points over the same modules:

- :meth:`MultiViewModel.forward` — the official call ``res1, res2s = model(view1, view2s)`` with
  the official outputs (every reference path, heads called once per output slot so BatchNorm
  train-mode statistics match). For parity tests and training.
- :meth:`MultiViewModel.predict` — what the pipeline uses: one scene, reference path 0 only, views
  in input order, eval-mode maths, and no work for outputs nobody uses (heads only for path 0,
  Gaussian heads only when asked, views processed in chunks so memory grows linearly).

State-dict keys, shapes and order equal the official ones, so released checkpoints load unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Literal, Optional

import torch
from torch import nn

from .blocks import DecoderBlock, EncoderBlock
from .config import ModelConfig
from .decoder import cross_reference_layer, multiview_layer
from .errors import InputError
from .heads import GSHead, LinearPts3d
from .prediction import Prediction
from .rope import RoPE2D, RotaryTables, grid_positions
from .typed_modules import TypedModuleList

Precision = Literal["fp32", "bf16", "bf16-skip-cnn"]
DEFAULT_VIEW_CHUNK = 8


class PatchEmbed(nn.Module):
    """``Conv2d(3, D, k=p, s=p)``; tokens row-major (index = row·(W/p) + col), no norm."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.proj(img).flatten(2).transpose(1, 2)


class MultiViewModel(nn.Module):
    """MV-DUSt3R (``config.multi_ref=False``) or MV-DUSt3R+ with ``config.n_ref`` reference paths."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.checkpoint_path: Optional[str] = None   # the file a loader read it from (see .checkpoint)
        c = config
        # Registration order = official state-dict order.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_embed_dim))  # unused; in the file
        self.patch_embed = PatchEmbed(c.patch_size, c.enc_embed_dim)
        self.enc_blocks = TypedModuleList(
            EncoderBlock(c.enc_embed_dim, c.enc_num_heads, c.mlp_ratio) for _ in range(c.enc_depth))
        self.enc_norm = nn.LayerNorm(c.enc_embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)

        def decoder() -> TypedModuleList[DecoderBlock]:
            return TypedModuleList(DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio)
                                 for _ in range(c.dec_depth))

        self.dec_blocks = decoder()
        self.dec_norm = nn.LayerNorm(c.dec_embed_dim, eps=1e-6)
        self.dec_same_view_blocks = decoder() if c.multi_ref else None
        self.dec_blocks2 = decoder()
        self.downstream_head1 = LinearPts3d(c.dec_embed_dim, c.patch_size, c.skip_dim)
        self.downstream_head2 = LinearPts3d(c.dec_embed_dim, c.patch_size, c.skip_dim)
        self.downstream_GS_head = TypedModuleList(
            GSHead(c.dec_embed_dim, c.patch_size, c.gs_mlp_dim, c.sh_degree) for _ in range(2))
        self.rope = RoPE2D(c.rope_freq)
        if not self.mask_token.is_meta:     # meta tensors hold no values (loaders build there)
            self._init_weights()

    # ------------------------------------------------------------------------------ set-up
    def _init_weights(self) -> None:
        """CroCo's initialisation (xavier-uniform linears, unit LayerNorms); the cross-reference
        blocks' output layers and the skip CNN's last conv start at zero, as officially (so a
        fresh MV-DUSt3R+ equals independent paths, and the skip CNN starts as a no-op)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.dec_same_view_blocks is not None:
            for blk in self.dec_same_view_blocks:
                for lin in (blk.attn.proj, blk.cross_attn.proj, blk.mlp.fc2):
                    nn.init.zeros_(lin.weight)
                    nn.init.zeros_(lin.bias)
        for head in (self.downstream_head1, self.downstream_head2):
            last = head.skip_proj[-1].conv
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    @property
    def n_paths(self) -> int:
        """Reference paths the decoder runs (1 for MV-DUSt3R)."""
        return self.config.n_ref if self.config.multi_ref else 1

    def _rope(self, hw: tuple[int, int], head_dim: int, device: torch.device) -> RotaryTables:
        p = self.config.patch_size
        return self.rope.tables(grid_positions(hw[0] // p, hw[1] // p, device), head_dim)

    # ------------------------------------------------------------------------------ trunk
    def encode(self, imgs: torch.Tensor, chunk: Optional[int] = None,
               step: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """Images [M, 3, H, W] -> encoder tokens after ``enc_norm`` [M, T, D_enc].

        ``chunk`` bounds how many images go through the encoder at once (memory); ``step`` is
        called after every block of every chunk.
        """
        c = self.config
        h, w = imgs.shape[-2:]
        rope = self._rope((h, w), c.enc_embed_dim // c.enc_num_heads, imgs.device)
        out = []
        for part in imgs.split(chunk or imgs.shape[0]):
            x = self.patch_embed(part)
            for blk in self.enc_blocks:
                x = blk(x, rope)
                if step is not None:
                    step()
            out.append(self.enc_norm(x))
        return out[0] if len(out) == 1 else torch.cat(out)

    def decode(self, tokens: torch.Tensor, hw: tuple[int, int], chunk_tokens: int,
               trace: Optional[dict[str, torch.Tensor]] = None,
               out_paths: Optional[int] = None, step: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """``decoder_embed`` output [N, B, T, D] -> last layer's states [R', N, B, T, D]
        (before ``dec_norm``; path r has view r as its reference).

        ``out_paths`` limits the returned paths to the first R' (all paths still run every
        layer but the last, where the others are only read). ``trace``, if given, receives
        every layer's states under the golden file's names. ``step`` is called after each
        multi-view and each cross-reference layer.
        """
        c = self.config
        rope = self._rope(hw, c.dec_embed_dim // c.dec_num_heads, tokens.device)
        x = tokens.unsqueeze(0).expand(self.n_paths, *tokens.shape)
        for layer in range(c.dec_depth):
            x = multiview_layer(self.dec_blocks[layer], self.dec_blocks2[layer], x, rope,
                                chunk_tokens)
            if step is not None:
                step()
            if self.dec_same_view_blocks is None:
                if trace is not None:
                    trace[f"dec.layer{layer}"] = x[0]
                continue
            if trace is not None:
                trace[f"dec.layer{layer}.mv"] = x
            last = layer == c.dec_depth - 1
            x = cross_reference_layer(self.dec_same_view_blocks[layer], x, rope, chunk_tokens,
                                      out_paths if last else None)
            if step is not None:
                step()
            if trace is not None:
                trace[f"dec.layer{layer}.crossref"] = x
        return x

    # ------------------------------------------------------------------------------ forward
    def forward(self, view1: dict[str, Any], view2s: list[dict[str, Any]],
                trace: Optional[dict[str, torch.Tensor]] = None
                ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        """The official forward: ``res1, res2s`` for every reference path.

        Views are dicts with ``img`` float [B, 3, H, W] in [-1, 1] and optional ``true_shape``
        int [B, 2] = (H, W); ``view2s[0]`` may carry ``num_render_views`` (its first element k > 0
        drops the last k views). Outputs have batch B' = B·R, index b·R + r = path r; in path
        r >= 1 ``res1`` holds view r and ``res2s[r-1]`` view 0 (the official swap).
        ``trace``, if given, receives intermediate tensors under the golden file's names.
        """
        views = [view1, *view2s]
        render = view2s[0].get("num_render_views") if view2s else None
        dropped = int(torch.as_tensor(render).flatten()[0]) if render is not None else 0
        if dropped > 0:
            views = views[: len(views) - dropped]
        imgs = [v["img"] for v in views]
        b, _, h, w = imgs[0].shape
        if any(i.shape != imgs[0].shape for i in imgs):
            raise NotImplementedError("all views must share one image size")
        self._check_views(len(views), h, w)
        default_shape = torch.tensor([h, w]).expand(b, 2)
        shapes = torch.stack([torch.as_tensor(v.get("true_shape", default_shape)).cpu().long()
                              .reshape(b, 2) for v in views])                   # [N, B, 2] (CPU)
        n, r_paths = len(views), self.n_paths
        hw = (h, w)

        enc = self.encode(torch.cat(imgs))                                        # [N·B, T, D]
        t = enc.shape[1]
        tokens = self.decoder_embed(enc).view(n, b, t, -1)
        if trace is not None:
            p = self.config.patch_size
            pos = grid_positions(h // p, w // p, enc.device)
            trace["enc.pos"] = pos.expand(n, b, t, 2)
            trace["enc.out"] = enc.view(n, b, t, -1)
            trace["dec.embed"] = tokens
        final = self.dec_norm(self.decode(tokens, hw, DEFAULT_VIEW_CHUNK * t, trace))
        if trace is not None:
            if r_paths == 1:
                trace["dec.final_norm"] = final[0]
            else:
                trace["dec.final_norm_preswap"] = final

        # Output slots: batch index b·R + r; in path r >= 1, slot 0 holds view r and slot r view 0.
        view_of = torch.arange(n).unsqueeze(1).repeat(1, r_paths)                 # [N, R]
        for r in range(1, r_paths):
            view_of[0, r], view_of[r, r] = r, 0
        path = torch.arange(r_paths)

        def slots(a: torch.Tensor) -> torch.Tensor:
            # [R, N, B, ...] per (path, view) -> [N, B·R, ...] per output slot.
            s = a[path[None, :], view_of]                                         # [N, R, B, ...]
            return s.transpose(1, 2).flatten(1, 2)

        tok = slots(final)
        img = slots(torch.stack(imgs).unsqueeze(0).expand(r_paths, -1, -1, -1, -1, -1))
        shp = slots(shapes.unsqueeze(0).expand(r_paths, -1, -1, -1))

        res1 = self._heads(0, tok[0], img[0], shp[0])
        res2s = []
        for s in range(1, n):
            res = self._heads(1, tok[s], img[s], shp[s])
            res["pts3d_in_other_view"] = res.pop("pts3d")
            res2s.append(res)
        return res1, res2s

    def _heads(self, which: int, tokens: torch.Tensor, img: torch.Tensor,
               true_shape: torch.Tensor) -> dict[str, torch.Tensor]:
        """Point head + Gaussian head of one output slot (official landscape rule: a portrait
        batch is predicted at its true shape and returned transposed)."""
        if not bool((true_shape == true_shape[:1]).all()):
            raise NotImplementedError("true_shape must be the same for every scene of a view")
        hh, ww = (int(x) for x in true_shape[0])
        if (hh, ww) != tuple(img.shape[-2:]):
            raise ValueError(f"true_shape {(hh, ww)} does not match the image size "
                             f"{tuple(img.shape[-2:])}")
        res = self._point_head(which)(tokens, img, (hh, ww))
        res.update(self.downstream_GS_head[which](tokens, (hh, ww)))
        if hh > ww:
            res = {k: v.transpose(1, 2) for k, v in res.items()}
        return res

    def _point_head(self, which: int) -> LinearPts3d:
        """The point head of output slot 0 (the reference view) or of the other slots (1)."""
        return self.downstream_head1 if which == 0 else self.downstream_head2

    def _check_views(self, n: int, h: int, w: int) -> None:
        c = self.config
        if n < c.min_views:
            raise InputError(f"{c.variant} needs at least {c.min_views} views, got {n}",
                             "add more photos")
        p = c.patch_size
        if h % p or w % p or h <= 0 or w <= 0:
            raise InputError(f"image size {h}x{w} is not a multiple of the patch size {p}",
                             f"crop or resize to multiples of {p} (the released models use 224x224)")

    # ------------------------------------------------------------------------------ predict
    @torch.inference_mode()
    def predict(self, images: torch.Tensor, *, gaussians: bool = True,
                precision: Precision = "fp32", skip_cnn: bool = True,
                view_chunk: int = DEFAULT_VIEW_CHUNK,
                channels_last: bool = False,
                progress: Optional[Callable[[float], None]] = None) -> Prediction:
        """Reconstruct one scene: images float [N, 3, H, W] in [-1, 1] -> path-0 :class:`Prediction`.

        Equals ``forward``'s path 0 in eval mode (batch index 0 for MV-DUSt3R+), views in input
        order. Only path 0's heads run; all reference paths still go through the decoder (they
        fuse). ``view_chunk`` views at a time go through the encoder and heads (and bound the
        attention mask), so memory grows linearly with N; results agree across chunk sizes up to
        float rounding.
        Arithmetic (``engine.precision`` picks it for a run's ``precision`` option; this method's
        default is float32): ``precision="bf16"`` (bfloat16 autocast on the whole network),
        ``precision="bf16-skip-cnn"`` (only the point head's skip CNN in bfloat16: its output is
        scaled by 1e-4, so outputs stay within float32 parity tolerance — ``auto``'s choice);
        ``skip_cnn=False`` drops the skip CNN (an opt-in approximation, never chosen for a run). ``channels_last`` only changes the
        convolutions' memory layout (a GPU option; slower on the CPU we measured).
        ``progress(fraction)`` is called after every encoder block, decoder layer and head call
        (heads then go one view at a time), so a caller can show the longest stage advancing and
        stop it between two blocks by raising from the callback (the pipeline's cancel does).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"images must be a float tensor [N, 3, H, W], got shape "
                             f"{tuple(images.shape)}", "pass one scene's views stacked on dim 0")
        if not images.is_floating_point():
            raise InputError(f"images must be float in [-1, 1], got {images.dtype}",
                             "normalise with (x/255 - 0.5)/0.5")
        if precision not in ("fp32", "bf16", "bf16-skip-cnn"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'bf16-skip-cnn', "
                             f"got {precision!r}")
        if view_chunk < 1:
            raise ValueError(f"view_chunk must be >= 1, got {view_chunk}")
        n, _, h, w = images.shape
        self._check_views(n, h, w)
        if h > w:
            raise InputError(f"portrait input {h}x{w}: the official heads return portrait "
                             "batches transposed", "crop to a square (224x224) or landscape")
        images = images.to(self.patch_embed.proj.weight.dtype)   # float32 unless loaded cast
        autocast = (torch.autocast(images.device.type, dtype=torch.bfloat16)
                    if precision == "bf16" else nullcontext())
        skip_dtype = torch.bfloat16 if precision == "bf16-skip-cnn" else None
        head_chunk = view_chunk if progress is None else 1
        c = self.config
        total = (-(-n // view_chunk) * c.enc_depth + c.dec_depth * (1 if self.dec_same_view_blocks is None else 2)
                 + -(-n // head_chunk) + 1)
        done = [0]

        def step() -> None:
            if progress is not None:
                done[0] += 1
                progress(done[0] / total)

        with self._eval_mode(), autocast:
            enc = self.encode(images, view_chunk, step)
            t = enc.shape[1]
            tokens = self.decoder_embed(enc).view(n, 1, t, -1)
            # Path 0 only from here: its slot order is the input order (no swap for r = 0).
            final = self.dec_norm(self.decode(tokens, (h, w), view_chunk * t,
                                              out_paths=1, step=step)[0, :, 0])    # [N, T, D]
            parts: dict[str, list[torch.Tensor]] = {}
            for start in range(0, n, head_chunk):
                stop = min(n, start + head_chunk)
                for which, lo, hi in ((0, start, min(stop, 1)), (1, max(start, 1), stop)):
                    if lo >= hi:
                        continue
                    res = self._point_head(which)(final[lo:hi], images[lo:hi], (h, w),
                                                  skip_cnn=skip_cnn, skip_dtype=skip_dtype,
                                                  channels_last=channels_last)
                    if gaussians:
                        res.update(self.downstream_GS_head[which](final[lo:hi], (h, w)))
                    for k, v in res.items():
                        parts.setdefault(k, []).append(v.float())
                step()
        out = {k: torch.cat(v) for k, v in parts.items()}
        step()
        if gaussians:
            out["opacity"] = out["opacity"].squeeze(-1)
        return Prediction(**out)

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Eval-mode maths (BatchNorm running statistics) for the duration; restores the mode."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)


def build_model(cfg: ModelConfig) -> MultiViewModel:
    """A network of shape ``cfg`` with fresh weights (works under ``torch.device("meta")``)."""
    return MultiViewModel(cfg)
