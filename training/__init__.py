"""Training MV-DUSt3R / MV-DUSt3R+ from scratch on procedural scenes (not shipped in the extension).

Modules: :mod:`.world` (the distributions scenes and captures come from), :mod:`.scenes` (procedural
rooms and turntables), :mod:`.cameras` (intrinsics; walks, pans, orbits),
:mod:`.render` (batched ray casting), :mod:`.splatting` (differentiable Gaussian rendering),
:mod:`.dataset` (multi-view samples and the paper's view-count recipes), :mod:`.loss` (the paper's
confidence-weighted pointmap loss and the rendering loss), :mod:`.checkpoints` (official
checkpoint files), :mod:`.train` (the command-line loop), :mod:`.session` (one short GPU session:
resume, train, evaluate, write a few small files), :mod:`.evaluate` (held-out metrics against a
trivial baseline), :mod:`.validation` (the same on Blender-rendered scenes, which
``validation_scenes.py`` makes with a Blender Python).
"""
