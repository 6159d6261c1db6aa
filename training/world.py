"""What the procedural generator may draw: a *world* is the distribution of scenes and captures.

Two worlds exist, by name (``--world`` of the training, evaluation and session commands):

- ``rooms-v1``: the world the shipped default model was trained in (docs/default-model.md):
  rooms seen from inside on walks of 20–100° around their centre, horizontal field of view
  50–80°, square photos, five solid textures, one sun. Its draws are exactly those of the first
  generator, so its scenes (the samples, the held-out tables in the docs) stay reproducible. (Its
  walks were narrowed from 60–300° after a 6 M-parameter network trained from scratch for an hour
  on 2 CPU cores stayed on the "same mean room for every view" plateau with the wide ones.)
- ``wide``: the world the next model trains in. Beside the rooms seen from inside on walks of up to
  360°, pans from one standing spot (the camera turns, up to 360°) and object turntables /
  orbits (a cluster of props on open ground, cameras on a full 360° ring); fields of view
  35–95°; photos of mixed aspect ratio as the add-on's pipeline sees them (the centre square of a
  4:3, 3:4, 16:9, 9:16 or square photo); seven textures; one or two coloured lights.

A photo of aspect ratio a = W/H with horizontal field of view F reaches the square network input as
its centre square (the add-on's short-side resize + centre crop, ``engine/images.py``), whose
horizontal field of view is ``2·atan(tan(F/2)·min(1, 1/a))``: a landscape photo's crop sees less
than the photo. ``fov_deg`` is F, the photo's.
"""
from __future__ import annotations

from dataclasses import dataclass

CAPTURES = ("walk", "pan", "orbit")


@dataclass(frozen=True)
class World:
    """One distribution of procedural scenes and camera captures."""

    name: str
    fov_deg: tuple[float, float]          # horizontal field of view of the PHOTO, uniform in degrees
    aspects: tuple[float, ...]            # photo width / height, one drawn per capture (1.0: square)
    walk_deg: tuple[float, float]         # arc of a walk around the room's centre, looking at it
    pan_deg: tuple[float, float]          # yaw swept by a pan from one standing spot, looking outwards
    turntable_share: float                # fraction of scenes that are turntables (captured by orbits)
    pan_share: float                      # fraction of room captures that are pans (the rest: walks)
    textures: int                         # how many of training.scenes.Texture are drawn
    max_lights: int                       # 1 or 2 directional lights


ROOMS_V1 = World("rooms-v1", fov_deg=(50.0, 80.0), aspects=(1.0,), walk_deg=(20.0, 100.0), pan_deg=(0.0, 0.0),
                 turntable_share=0.0, pan_share=0.0, textures=5, max_lights=1)
WIDE = World("wide", fov_deg=(35.0, 95.0), aspects=(4 / 3, 3 / 4, 16 / 9, 9 / 16, 1.0), walk_deg=(20.0, 360.0),
             pan_deg=(30.0, 360.0), turntable_share=0.35, pan_share=0.4, textures=7, max_lights=2)
WORLDS: dict[str, World] = {w.name: w for w in (ROOMS_V1, WIDE)}
