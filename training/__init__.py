"""Training MV-DUSt3R / MV-DUSt3R+ from scratch on procedural scenes (not shipped in the extension).

Modules: :mod:`.scenes` (procedural rooms), :mod:`.cameras` (intrinsics, trajectories),
:mod:`.render` (batched ray casting), :mod:`.splatting` (differentiable Gaussian rendering),
:mod:`.dataset` (multi-view samples and the paper's view-count recipes), :mod:`.loss` (the paper's
confidence-weighted pointmap loss and the rendering loss), :mod:`.checkpoints` (official
checkpoint files), :mod:`.train` (the command-line loop), :mod:`.evaluate` (held-out metrics
against a trivial baseline).
"""
