"""Where a reconstruction lands in Blender: upright, the floor at z = 0, the origin under its centre.

The network's world is the first camera's frame, so a scene arrives as tilted as that photo was.
:func:`estimate_alignment` finds one similarity (rotation, translation, scale 1) from the bundle's
world to Blender's Z-up world, from evidence alone (numpy only, never bpy):

1. **Up from the cameras.** People hold cameras with little roll, so up is the direction most nearly
   perpendicular to every camera's x-axis; among those it is the one nearest each camera's −y
   (OpenCV y points down). Both enter one quadratic form whose smallest eigenvector is up — the
   x-axes weighted as a 3° roll prior, the −y axes as a 30° pitch prior — refitted with Cauchy
   weights on the roll, so a camera held sideways does not pull it.
2. **Refined by the floor.** A RANSAC plane through the confident points, below the cameras, its
   normal agreeing with the cameras' roll (every x-axis in it) and pitch (their −y on its side):
   the largest such plane is the floor and its normal becomes up. A strip of photos that all share
   one x-axis fixes up only up to a turn about it; the floor decides that turn.
3. **Centre.** When the cameras' optical axes meet (a ring around an object: their least-squares
   intersection lies in front of them all, the axes pass close to it and the cameras surround it)
   the origin goes under that point, on the highest plane beneath it (the table or turntable that
   supports the object); otherwise under the confident points' median, on the floor.
4. **Horizontal axes**: the reference camera looks along +Y, as before the alignment.

Without evidence (fewer than two usable cameras, or cameras that disagree about up, e.g. all
rolled 90°) the alignment falls back to today's rule, ``conventions.world_axes("Z_UP")``, and says
why. The result is recorded in the bundle's ``meta["alignment"]`` (:meth:`Alignment.to_meta`), so a
re-import or a later export lands in the same frame ([bundle.md](../../docs/bundle.md)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .confidence import ConfidenceCut
from .errors import OptionError
from .conventions import world_axes
from .rotations import quaternion_from_matrix, quaternion_multiply

if TYPE_CHECKING:
    from .bundle import Bundle


ROLL_PRIOR_DEG = 3.0        # how far people roll a camera
PITCH_PRIOR_DEG = 30.0      # how far they tilt it up or down
ROLL_INLIER_DEG = 10.0      # a camera rolled more than this is an outlier for up
PITCH_LIMIT_DEG = 80.0      # a camera looking more steeply than this says nothing about up
FLOOR_MIN_SUPPORT = 0.05    # share of the confident points a floor must hold
MAX_POINTS = 30_000         # the points the plane and centre statistics use (an even subsample)
RANSAC_HYPOTHESES = 400
CAMERA_CONE_DEG = 10.0     # a floor may turn up this far from where cameras that fix it put it
PLANE_TOLERANCE = 0.004    # a point within this share of the scene's size of a plane counts for it


@dataclass(frozen=True)
class Alignment:
    """One similarity from the bundle's world (OpenCV, network units) to Blender's Z-up world,
    and how sure it is. ``matrix`` is ``[[s·R, t], [0, 1]]``."""

    matrix: np.ndarray                 # float64 [4,4]
    method: str                        # "level", "first_camera" (asked for, or the fallback) or "none"
    up_source: str = "none"            # "cameras", "cameras+floor" or "none"
    centre_source: str = "none"        # "ring" (the point the cameras look at), "points" or "none"
    cameras_used: int = 0              # cameras that agreed about up (outliers left out)
    roll_spread_deg: float = 0.0       # median |roll| of those cameras about the final up
    floor_support: float = 0.0         # share of the confident points on the floor plane (0: none found)
    fallback_reason: str = ""          # why "level" fell back to the first camera's rule ("" when it did not)

    @property
    def scale(self) -> float:
        return float(np.cbrt(np.linalg.det(self.matrix[:3, :3])))

    @property
    def rotation(self) -> np.ndarray:
        """float64 [3,3]: the rotation part (the matrix without its scale)."""
        return self.matrix[:3, :3] / self.scale

    @property
    def up(self) -> np.ndarray:
        """float64 [3]: the bundle-world direction that becomes Blender's +Z."""
        return self.rotation[2].copy()

    def scaled(self, factor: float) -> "Alignment":
        """The same alignment followed by a uniform scale about Blender's origin."""
        matrix = self.matrix.copy()
        matrix[:3] *= factor
        return replace(self, matrix=matrix)

    def summary(self) -> str:
        """One line for the import report: what was done and how sure it is."""
        if self.method != "level":
            why = f" ({self.fallback_reason})" if self.fallback_reason else ""
            return f"placed in the first camera's frame{why}" if self.method == "first_camera" else \
                "kept in the network's frame"
        floor = (f" and the floor ({100 * self.floor_support:.0f} % of the points)"
                 if self.up_source == "cameras+floor" else " (no floor plane found)")
        centre = "the point the cameras look at" if self.centre_source == "ring" else "the points' centre"
        return (f"levelled: up from {self.cameras_used} cameras (roll spread {self.roll_spread_deg:.1f}°){floor}; "
                f"origin under {centre}")

    def to_meta(self) -> dict[str, Any]:
        """A JSON object for ``meta["alignment"]``."""
        return {"matrix": [[float(v) for v in row] for row in self.matrix], "method": self.method,
                "up_source": self.up_source, "centre_source": self.centre_source,
                "cameras_used": self.cameras_used, "roll_spread_deg": round(self.roll_spread_deg, 4),
                "floor_support": round(self.floor_support, 4), "fallback_reason": self.fallback_reason}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Alignment":
        """Inverse of :meth:`to_meta`; ValueError when the matrix is not a similarity."""
        matrix = np.asarray(meta["matrix"], dtype=np.float64)
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or not np.allclose(matrix[3], [0, 0, 0, 1]):
            raise ValueError("alignment.matrix is not a 4×4 matrix with last row 0 0 0 1")
        linear = matrix[:3, :3]
        scale = np.cbrt(np.linalg.det(linear))
        if not scale > 0 or not np.allclose(linear @ linear.T, scale ** 2 * np.eye(3), atol=1e-6 * scale ** 2):
            raise ValueError("alignment.matrix is not a rotation, translation and positive uniform scale")
        return cls(matrix=matrix, method=str(meta.get("method", "level")),
                   up_source=str(meta.get("up_source", "none")), centre_source=str(meta.get("centre_source", "none")),
                   cameras_used=int(meta.get("cameras_used", 0)),
                   roll_spread_deg=float(meta.get("roll_spread_deg", 0.0)),
                   floor_support=float(meta.get("floor_support", 0.0)),
                   fallback_reason=str(meta.get("fallback_reason", "")))


def fixed_alignment(align: str) -> Alignment:
    """The rules that need no evidence: ``first_camera`` (Z up from the first camera) and ``none``."""
    if align == "first_camera":
        return Alignment(matrix=world_axes("Z_UP"), method="first_camera")
    if align == "none":
        return Alignment(matrix=world_axes("NETWORK"), method="none")
    raise OptionError(f"align={align!r} is not an alignment", "use level, first_camera or none")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smallest_eigenvector(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(matrix)
    return vectors[:, 0], values


def up_from_cameras(x_axes: np.ndarray, up_axes: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(up [3], inlier weights [N], whether the roll alone fixes up) from the cameras' x-axes and
    −y axes [N,3] (world).

    Minimises Σ w·(u·x)²/σ_roll² + Σ w·(1 − (u·y)²)/σ_pitch² over unit u — the squared sines of each
    camera's roll and pitch about u — with Cauchy weights on the roll (6 reweightings)."""
    n = len(x_axes)
    weights = np.ones(n)
    roll_var, pitch_var = math.radians(ROLL_PRIOR_DEG) ** 2, math.radians(PITCH_PRIOR_DEG) ** 2
    up = _unit(up_axes.mean(0))
    for _ in range(6):
        form = (np.einsum("n,ni,nj->ij", weights, x_axes, x_axes) / roll_var
                + (weights.sum() * np.eye(3) - np.einsum("n,ni,nj->ij", weights, up_axes, up_axes)) / pitch_var)
        up, _ = _smallest_eigenvector(form)
        if (weights * (up_axes @ up)).sum() < 0:
            up = -up
        roll = np.arcsin(np.clip(x_axes @ up, -1, 1))
        weights = 1.0 / (1.0 + (roll / math.radians(ROLL_PRIOR_DEG + 2.0)) ** 2)
    spread = np.einsum("n,ni,nj->ij", weights, x_axes, x_axes) / weights.sum()
    second = np.linalg.eigvalsh(spread)[1]
    return up, weights, bool(second > math.sin(math.radians(10.0)) ** 2)


@dataclass(frozen=True)
class Plane:
    normal: np.ndarray   # unit [3], pointing to the cameras' side
    offset: float        # normal·p = offset on the plane
    support: float       # share of the points within the tolerance


def floor_plane(points: np.ndarray, up: np.ndarray, x_axes: np.ndarray, up_axes: np.ndarray,
                centres: np.ndarray, tolerance: float, cone_deg: float, roll_deg: float,
                rng: np.random.Generator) -> Optional[Plane]:
    """The largest plane of `points` [M,3] (within `tolerance`) whose normal lies within `cone_deg`
    of `up`, keeps every camera's roll under `roll_deg`, has the cameras' −y on its side and the
    cameras above it; None when none holds :data:`FLOOR_MIN_SUPPORT` of the points."""
    m = len(points)
    if m < 50:
        return None
    triples = points[rng.integers(0, m, size=(RANSAC_HYPOTHESES, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    length = np.linalg.norm(normals, axis=1)
    normals = normals[length > 1e-12] / length[length > 1e-12, None]
    triples = triples[length > 1e-12]
    normals *= np.sign(normals @ up)[:, None] + (normals @ up == 0)[:, None]
    offsets = np.einsum("ki,ki->k", normals, triples[:, 0])

    def acceptable(n: np.ndarray, d: np.ndarray) -> np.ndarray:
        return ((n @ up > math.cos(math.radians(cone_deg)))
                & (np.median(np.abs(n @ x_axes.T), axis=1) < math.sin(math.radians(roll_deg)))
                & (np.median(n @ up_axes.T, axis=1) > math.cos(math.radians(PITCH_LIMIT_DEG)))
                & (np.median(n @ centres.T - d[:, None], axis=1) > tolerance))

    ok = acceptable(normals, offsets)
    if not ok.any():
        return None
    normals, offsets = normals[ok], offsets[ok]
    scores = np.zeros(len(normals), dtype=np.int64)
    for start in range(0, len(normals), 64):   # 64 hypotheses × M points at a time
        block = slice(start, start + 64)
        scores[block] = (np.abs(points @ normals[block].T - offsets[block]) < tolerance).sum(0)
    normal, offset = normals[scores.argmax()], float(offsets[scores.argmax()])
    band = tolerance
    for _ in range(5):   # least-squares refit on the inliers, the band narrowed to 3 robust sigmas of them
        residual = points @ normal - offset
        inliers = points[np.abs(residual) < band]
        if len(inliers) < 3:
            return None
        mean = inliers.mean(0)
        _, _, vt = np.linalg.svd(inliers - mean, full_matrices=False)
        refit = vt[2] * (1.0 if vt[2] @ normal >= 0 else -1.0)
        if not acceptable(refit[None], np.array([refit @ mean]))[0]:
            break
        normal, offset = refit, float(refit @ mean)
        band = min(tolerance, 3 * 1.4826 * float(np.median(np.abs(inliers @ normal - offset))) + 1e-9 * tolerance)
    support = float((np.abs(points @ normal - offset) < tolerance).mean())
    return Plane(normal, offset, support) if support >= FLOOR_MIN_SUPPORT else None


def ring_centre(centres: np.ndarray, forward: np.ndarray, up: np.ndarray) -> Optional[np.ndarray]:
    """The point the cameras look at, if they form a ring around it: the least-squares intersection of
    their optical axes, in front of every camera, the axes passing within 15 % of its distance, the
    cameras around it (their horizontal directions from it do not all point one way)."""
    if len(centres) < 3:
        return None
    across = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]     # [N,3,3] projectors off each axis
    normal = across.sum(0)
    if np.linalg.eigvalsh(normal)[0] < 0.05 * len(centres):
        return None                                                          # (nearly) parallel axes
    point = np.linalg.solve(normal, np.einsum("nij,nj->i", across, centres))
    to_point = point - centres
    distance = np.linalg.norm(to_point, axis=1)
    miss = np.linalg.norm(np.einsum("nij,nj->ni", across, to_point), axis=1)
    around = to_point - np.outer(to_point @ up, up)
    around_len = np.linalg.norm(around, axis=1)
    if np.any(np.einsum("ni,ni->n", to_point, forward) <= 0):
        return None
    if np.median(miss / distance) > 0.15 or np.any(around_len < 1e-9):
        return None
    resultant = np.linalg.norm((around / around_len[:, None]).mean(0))
    return point if resultant < 0.6 else None


def support_height(points: np.ndarray, up: np.ndarray, centre: np.ndarray, radius: float,
                   tolerance: float) -> Optional[float]:
    """The height (along `up`) of the highest flat layer under `centre`: among the points within
    `radius` of the vertical through it and below it, the highest sharp peak of their heights (at
    least 5 % of them within two `tolerance` bins, three times as many as two bins above or below)."""
    heights = points @ up
    offset = points - centre
    horizontal = np.linalg.norm(offset - np.outer(offset @ up, up), axis=1)
    below = heights[(horizontal < radius) & (heights < centre @ up)]
    if len(below) < 50:
        return None
    bins = np.floor((below - below.min()) / tolerance).astype(np.int64) + 4
    counts = np.bincount(bins, minlength=bins.max() + 6)
    pairs = counts + np.roll(counts, -1)              # a layer may straddle two bins
    sides = np.minimum(np.roll(pairs, 3), np.roll(pairs, -3))
    peaks = np.flatnonzero((pairs >= 0.05 * len(below)) & (pairs > 3 * sides)
                           & (pairs >= np.roll(pairs, 1)) & (pairs >= np.roll(pairs, -1)))
    if len(peaks) == 0:
        return None
    top = peaks.max()
    return float(np.median(below[(bins >= top) & (bins <= top + 1)]))


def robust_extent(points: np.ndarray) -> float:
    """The diagonal of the box holding the middle 96 % of `points` along each axis."""
    low, high = np.percentile(points, [2, 98], axis=0)
    return float(np.linalg.norm(high - low))


def estimate_alignment(cam2world: np.ndarray, points: np.ndarray, *, reference: int = 0,
                       failed_views: Sequence[int] = (), seed: int = 0) -> Alignment:
    """The ``level`` alignment (module doc) of cameras `cam2world` [N,4,4] (OpenCV) and confident
    world `points` [M,3]; `reference` is the view that should look along +Y; `failed_views` hold
    placeholder poses and are ignored. Deterministic for given inputs (`seed`)."""
    c2w = np.asarray(cam2world, dtype=np.float64)
    usable = np.setdiff1d(np.arange(len(c2w)), np.asarray(list(failed_views), dtype=np.int64))
    if len(usable) < 2:
        return replace(fixed_alignment("first_camera"), fallback_reason="fewer than two cameras to tell up from")
    rot, centres = c2w[usable, :3, :3], c2w[usable, :3, 3]
    x_axes, up_axes, forward = _unit(rot[:, :, 0]), _unit(-rot[:, :, 1]), _unit(rot[:, :, 2])
    up, _, roll_fixes_up = up_from_cameras(x_axes, up_axes)
    roll = np.degrees(np.arcsin(np.clip(x_axes @ up, -1, 1)))
    pitch = np.degrees(np.arccos(np.clip(up_axes @ up, -1, 1)))
    agree = (np.abs(roll) < ROLL_INLIER_DEG) & (pitch < PITCH_LIMIT_DEG)
    if agree.sum() < 2 or agree.sum() < 0.5 * len(usable):
        return replace(fixed_alignment("first_camera"),
                       fallback_reason=f"the cameras disagree about up ({int(agree.sum())} of {len(usable)} "
                                       f"agree: rolled or upside down)")
    x_in, up_in, centres_in, forward_in = x_axes[agree], up_axes[agree], centres[agree], forward[agree]

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    pts = pts[:: max(1, len(pts) // MAX_POINTS)]
    size = robust_extent(np.concatenate([pts, centres_in])) if len(pts) else 1.0
    tolerance = PLANE_TOLERANCE * size
    rng = np.random.default_rng(seed)
    spread = float(np.median(np.abs(roll[agree])))
    plane = floor_plane(pts, up, x_in, up_in, centres_in, tolerance,
                        cone_deg=CAMERA_CONE_DEG if roll_fixes_up else PITCH_LIMIT_DEG,
                        roll_deg=max(5.0, 3.0 * spread), rng=rng)
    if plane is not None:
        up = plane.normal
    roll_after = np.degrees(np.arcsin(np.clip(x_in @ up, -1, 1)))

    ring = ring_centre(centres_in, forward_in, up)
    centre = ring
    floor: Optional[float] = None
    if centre is not None:
        radius = 0.5 * float(np.median(np.linalg.norm(centres_in - centre, axis=1)))
        floor = support_height(pts, up, centre, radius, tolerance)
    if floor is None:
        floor = plane.offset if plane is not None else (float(np.percentile(pts @ up, 1)) if len(pts) else 0.0)
    if centre is None:
        centre = np.median(pts, axis=0) if len(pts) else centres_in.mean(0)
    origin = centre - (centre @ up - floor) * up

    ref = np.flatnonzero(usable == reference)
    x_ref = x_axes[ref[0]] if len(ref) else x_in[0]
    x_ref = x_ref - (x_ref @ up) * up
    if np.linalg.norm(x_ref) < 0.1:   # the reference camera is rolled 90°: any agreeing camera's x
        x_ref = x_in[0] - (x_in[0] @ up) * up
    x_b = _unit(x_ref)
    rotation = np.stack([x_b, np.cross(up, x_b), up])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = -rotation @ origin
    return Alignment(matrix=matrix, method="level", up_source="cameras+floor" if plane is not None else "cameras",
                     centre_source="ring" if ring is not None else "points",
                     cameras_used=int(agree.sum()), roll_spread_deg=float(np.median(np.abs(roll_after))),
                     floor_support=plane.support if plane is not None else 0.0)


def alignment_of(bundle: "Bundle", align: str) -> Alignment:
    """Where `bundle` lands for the ``align`` option: for ``level`` the alignment its ``meta["alignment"]``
    records (so every import and export of one bundle agree), else — a bundle written before it was
    recorded — estimated here from its cameras and its confident points, as the worker does."""
    if align != "level":
        return fixed_alignment(align)
    recorded = bundle.meta.get("alignment")
    if isinstance(recorded, dict):
        try:
            return Alignment.from_meta(recorded)
        except (KeyError, TypeError, ValueError):
            pass   # unreadable: estimate it again
    meta = bundle.meta
    return estimate_alignment(bundle.cam2world, bundle.pts3d[ConfidenceCut().keep(bundle.conf)],
                              reference=int(meta.get("reference_view", 0)),
                              failed_views=[int(v) for v in meta.get("pose_failed_views", [])])


def aligned_bundle(bundle: "Bundle", alignment: Alignment) -> "Bundle":
    """`bundle` re-expressed in `alignment`'s frame, keeping the bundle's OpenCV-style world axes (the
    exports' convention): gravity along +y, the floor at y = 0, the reference camera looking along +z.
    Points, camera poses (rigid, their positions scaled), Gaussian rotations and sizes move together;
    its ``meta["alignment"]`` then maps it onto the same Blender frame through the first camera's rule,
    so importing or exporting it again changes nothing."""
    matrix = np.linalg.inv(world_axes("Z_UP")) @ alignment.matrix
    scale = alignment.scale
    rotation = matrix[:3, :3] / scale

    def points(p: np.ndarray) -> np.ndarray:
        return (p.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)

    cam2world = matrix @ bundle.cam2world.astype(np.float64)
    cam2world[:, :3, :3] /= scale
    rotations, sizes = bundle.gaussian_rotation, bundle.gaussian_scale
    if rotations is not None and sizes is not None:
        left = quaternion_multiply(quaternion_from_matrix(rotation)[None, :], np.eye(4))
        rotations = (rotations.astype(np.float64) @ left).astype(np.float32)
        sizes = (sizes * scale).astype(np.float32)
    recorded = replace(alignment, matrix=world_axes("Z_UP"))
    return replace(bundle, pts3d=points(bundle.pts3d), cam2world=cam2world.astype(np.float32),
                   gaussian_rotation=rotations, gaussian_scale=sizes,
                   meta={**bundle.meta, "alignment": {**recorded.to_meta(), "applied": alignment.to_meta()}})
