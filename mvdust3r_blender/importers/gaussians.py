"""The 3D Gaussians: points carrying the Gaussian attributes, instanced as oriented, scaled splats
that render like a 3D Gaussian splatting rasteriser (EWA splatting with the 0.3 px² low-pass,
front-to-back compositing, α ≤ 0.99) in Cycles and EEVEE.

The mesh holds one vertex per Gaussian with ``rot`` (QUATERNION, w,x,y,z, Blender world; axes ordered
by decreasing σ, see ``splats.sort_axes``), ``scale`` (FLOAT_VECTOR, the standard deviations along
those axes), ``opacity`` (FLOAT), ``Col`` (FLOAT_COLOR, linear) and ``pixel_size`` (FLOAT, the world
size of a photo pixel at the Gaussian in the view it came from). The geometry-nodes modifier:

1. drops Gaussians below ``Opacity Threshold``;
2. adds the 3DGS low-pass: each σ becomes √(σ² + Low-Pass · p²), p the world size of a render pixel
   at the Gaussian — depth along the scene's active camera / ``Focal Length (px)`` (kept equal to the
   scene camera's focal length in render pixels by :func:`.splat_camera.sync_focal_lengths`, which the add-on runs
   before every render and after every scene change), or ``pixel_size`` when the scene has no camera;
3. makes each Gaussian one transparent surface (so a ray crosses one surface per splat and
   Cycles' transparent-bounce limit is reached later): flat Gaussians (thinnest σ < 0.3 × the middle
   one after the low-pass) get a disc in their major plane, rotated by ``rot`` and scaled by σ ×
   ``Scale Multiplier`` = m (the splat spans m σ); round ones a disc through the centre parallel to
   the active camera's image plane, laid out in the Gaussian's own normalised frame (so every ray
   meets it at the centre's depth, 3DGS's compositing order: :func:`facing_transform`), or, with no
   scene camera, a closed
   icosphere whose back faces are transparent.

The material reads the instancer's attributes and gives each view ray the alpha a 3DGS rasteriser
gives its pixel: in the splat's own frame the Gaussian is isotropic (one unit = m σ), and a ray
passing at distance b from the centre has peak density exp(−½ (m·b)²), which is the projected 2D
Gaussian for any rotation and anisotropic scale. b² = |P|² − (P·D)² from the shading point P and the
unit view direction D in object (instance) coordinates — an isometry of the Gaussian's normalised
frame for all three shapes — wherever the ray meets the disc or the shell's front face;
α = min(0.99, opacity · exp(−½ m² b²)), dropped below 1/255 as in 3DGS.
"""
from __future__ import annotations

import math

import bpy
import numpy as np

from ..core.splats import LOW_PASS, sort_axes
from .cameras import camera_focal_px
from .nodes import (ModifierInput, math_node, named_attribute, new_geometry_group, new_node_material, set_modifier_input,
                    thresholded_points, vector_math_node)
from .points import COLOR_ATTRIBUTE, new_points_mesh

MODIFIER = "MV-DUSt3R Gaussians"
OPACITY_THRESHOLD = "Opacity Threshold"
SCALE_MULTIPLIER = "Scale Multiplier"
LOW_PASS_INPUT = "Low-Pass (px²)"
FOCAL_LENGTH = "Focal Length (px)"
SIGMAS_ATTRIBUTE = "splat_sigmas"      # m, per instance, for the material
SHELL_ATTRIBUTE = "splat_shell"        # 1 on icosphere splats (only front faces count), 0 on discs
STRETCH_ATTRIBUTE = "splat_stretch"    # k ≥ 1: camera-parallel discs are stretched along object x by k
MAX_STRETCH = 4.0       # rays more than 75.5° off a camera-parallel disc's normal (in the normalised
                        # frame) lose the outer part of their footprint
PIXEL_SIZE_ATTRIBUTE = "pixel_size"
ID_PROPERTY = "mvdust3r_blender"    # custom property on what the add-on made: which part it is
SPLATS_ID = "gaussians"
FLAT_RATIO = 0.3        # a disc when σ_min < 0.3 σ_mid: seen up to 75° off its normal, the disc
                        # (radius m σ) still holds every ray through the Gaussian's 2σ core
DISC_VERTICES = 16
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
# Cycles ends a path after this many transparent surfaces (default 8).


def splat_material(name: str) -> bpy.types.Material:
    """Emission of ``Col`` mixed with transparency by the Gaussian's per-ray alpha (Cycles and EEVEE)."""
    material, nodes, links = new_node_material(name)
    material.surface_render_method = "DITHERED"
    # the splats light nothing: keep 100 k emissive instances out of Cycles' light tree
    getattr(material, "cycles").emission_sampling = "NONE"
    tree = material.node_tree
    assert tree is not None

    def attribute(attr: str, y: float) -> bpy.types.Node:  # outputs: Color, Vector, Fac(tor)
        node = nodes.new("ShaderNodeAttribute")
        setattr(node, "attribute_type", "INSTANCER")
        setattr(node, "attribute_name", attr)
        node.location = (-1200, y)
        return node

    colour, opacity = attribute(COLOR_ATTRIBUTE, 300), attribute("opacity", 0)
    sigmas, shell = attribute(SIGMAS_ATTRIBUTE, -300), attribute(SHELL_ATTRIBUTE, -450)
    stretch = attribute(STRETCH_ATTRIBUTE, -750)
    geometry = nodes.new("ShaderNodeNewGeometry")
    geometry.location = (-1400, -600)
    coords = nodes.new("ShaderNodeTexCoord")   # "Object": the splat's own (unit-sphere) coordinates
    coords.location = (-1400, -900)
    to_local = nodes.new("ShaderNodeVectorTransform")
    setattr(to_local, "vector_type", "VECTOR")
    setattr(to_local, "convert_from", "WORLD")
    setattr(to_local, "convert_to", "OBJECT")
    to_local.location = (-1200, -600)
    links.new(geometry.outputs["Incoming"], to_local.inputs[0])
    # undo a camera-parallel disc's stretch along object x: back to the Gaussian's normalised frame
    unstretch = nodes.new("ShaderNodeCombineXYZ")
    unstretch.location = (-1000, -750)
    links.new(stretch.outputs["Fac"], unstretch.inputs[0])
    unstretch.inputs[1].default_value = 1.0  # type: ignore[attr-defined]
    unstretch.inputs[2].default_value = 1.0  # type: ignore[attr-defined]
    point = vector_math_node(tree, "MULTIPLY", coords.outputs["Object"], unstretch.outputs[0], (-1100, -900))
    direction = vector_math_node(tree, "NORMALIZE", vector_math_node(tree, "MULTIPLY", to_local.outputs[0],
                                                                     unstretch.outputs[0], (-1100, -600)),
                                 None, (-1000, -600))
    along = vector_math_node(tree, "DOT_PRODUCT", point, direction, (-800, -600))
    radial = vector_math_node(tree, "DOT_PRODUCT", point, point, (-800, -900))
    b2 = math_node(tree, "SUBTRACT", radial, math_node(tree, "MULTIPLY", along, along, (-600, -600)), (-400, -750))
    m2 = math_node(tree, "MULTIPLY", sigmas.outputs["Fac"], sigmas.outputs["Fac"], (-800, -300))
    exponent = math_node(tree, "MULTIPLY", math_node(tree, "MULTIPLY", b2, m2, (-200, -450)), -0.5, (-100, -450))
    peak = math_node(tree, "MULTIPLY", math_node(tree, "EXPONENT", exponent, 0.0, (0, -450)), opacity.outputs["Fac"],
                     (150, -300))
    capped = math_node(tree, "MINIMUM", peak, ALPHA_MAX, (300, -300))
    seen = math_node(tree, "GREATER_THAN", capped, ALPHA_MIN, (300, -450))
    front = math_node(tree, "SUBTRACT", 1.0, math_node(tree, "MULTIPLY", geometry.outputs["Backfacing"],
                                                       shell.outputs["Fac"], (-400, -1050)), (-200, -1050))
    alpha = math_node(tree, "MULTIPLY", math_node(tree, "MULTIPLY", capped, seen, (450, -300)), front, (600, -300))
    emission = nodes.new("ShaderNodeEmission")
    emission.location = (200, 200)
    links.new(colour.outputs["Color"], emission.inputs["Color"])
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    transparent.location = (200, 0)
    mix = nodes.new("ShaderNodeMixShader")
    mix.location = (400, 100)
    links.new(alpha, mix.inputs[0])
    links.new(transparent.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], nodes["Material Output"].inputs["Surface"])
    return material


def gaussians_node_group(name: str, material: bpy.types.Material) -> bpy.types.GeometryNodeTree:
    """Points (minus opacity < threshold) → low-passed splats: discs on flat Gaussians, icospheres on the rest."""
    group = new_geometry_group(name, [
        ModifierInput(OPACITY_THRESHOLD, "Splats less opaque than this are not shown", 0.0, 1.0),
        ModifierInput(SCALE_MULTIPLIER, "How far each splat reaches from its centre, in standard deviations of its "
                                        "Gaussian (3: nearly all of it; less: smaller, sharper splats)", 0.1, 10.0),
        ModifierInput(LOW_PASS_INPUT, "Blur added to every splat on screen, in square pixels of the render (0.3, as "
                                      "3D Gaussian Splatting does), so that splats smaller than a pixel don't flicker",
                      0.0, 10.0),
        ModifierInput(FOCAL_LENGTH, "The render camera's focal length in pixels, for the blur above: the add-on "
                                    "sets it before every render and on every scene change", 1.0)])
    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    group_in.location = (-1400, 0)
    group_out = nodes.new("NodeGroupOutput")
    group_out.location = (1400, 0)
    _, delete = thresholded_points(group, group_in, "opacity", OPACITY_THRESHOLD, -1200, 400)

    # p² = (world size of a render pixel at the Gaussian)², from the active camera when there is one:
    # (z/f)² · z/r (z depth along the view axis, r distance): its projection adds the low-pass with the
    # area (determinant) of 0.3·I at every point of the image, also off the axis where J·Jᵀ stretches it
    camera = nodes.new("GeometryNodeInputActiveCamera")
    camera.location = (-1200, -300)
    info = nodes.new("GeometryNodeObjectInfo")
    setattr(info, "transform_space", "RELATIVE")     # the camera in this object's own coordinates
    info.location = (-1000, -300)
    links.new(camera.outputs[0], info.inputs["Object"])
    forward = nodes.new("FunctionNodeRotateVector")
    forward.inputs["Vector"].default_value = (0.0, 0.0, -1.0)  # type: ignore[attr-defined]
    forward.location = (-800, -450)
    links.new(info.outputs["Rotation"], forward.inputs["Rotation"])
    position = nodes.new("GeometryNodeInputPosition")
    position.location = (-1000, -600)
    offset = vector_math_node(group, "SUBTRACT", position.outputs[0], info.outputs["Location"], (-800, -600))
    depth = math_node(group, "ABSOLUTE", vector_math_node(group, "DOT_PRODUCT", offset, forward.outputs[0], (-600, -450)),
                      0.0, (-450, -450))
    distance = math_node(group, "MAXIMUM", vector_math_node(group, "LENGTH", offset, None, (-600, -600)), 1e-12,
                         (-450, -600))
    focal = group_in.outputs[FOCAL_LENGTH]
    live = math_node(group, "DIVIDE", math_node(group, "MULTIPLY", depth, math_node(
        group, "MULTIPLY", depth, depth, (-300, -400)), (-150, -400)), math_node(group, "MULTIPLY", distance, math_node(
            group, "MULTIPLY", focal, focal, (-300, -700)), (-150, -600)), (0, -500))
    stored = named_attribute(nodes, PIXEL_SIZE_ATTRIBUTE, "FLOAT", (-300, -850)).outputs["Attribute"]
    fallback = math_node(group, "MULTIPLY", stored, stored, (-150, -850))
    has_camera = math_node(group, "GREATER_THAN", vector_math_node(group, "LENGTH", info.outputs["Scale"], None,
                                                                   (-600, -1000)), 0.0, (-450, -1000))
    pixel2 = math_node(group, "ADD", fallback, math_node(group, "MULTIPLY", has_camera, math_node(
        group, "SUBTRACT", live, fallback, (150, -700)), (300, -800)), (450, -800))
    added = math_node(group, "MULTIPLY", pixel2, group_in.outputs[LOW_PASS_INPUT], (600, -800))

    sigma = nodes.new("ShaderNodeSeparateXYZ")
    sigma.location = (450, -1100)
    links.new(named_attribute(nodes, "scale", "FLOAT_VECTOR", (300, -1100)).outputs["Attribute"], sigma.inputs[0])
    dilated = nodes.new("ShaderNodeCombineXYZ")
    dilated.location = (900, -1100)
    roots = []
    for k in range(3):   # σ' = √(σ² + low-pass · p²), axis by axis
        s, y = sigma.outputs[k], -1000 - 150 * k
        roots.append(math_node(group, "SQRT", math_node(group, "ADD", math_node(group, "MULTIPLY", s, s, (600, y)),
                                                          added, (700, y)), 0.0, (800, y)))
        links.new(roots[k], dilated.inputs[k])
    flat = math_node(group, "LESS_THAN", math_node(group, "DIVIDE", roots[2], roots[1], (950, -850)), FLAT_RATIO,
                     (1050, -850))
    extent = vector_math_node(group, "SCALE", dilated.outputs[0], group_in.outputs[SCALE_MULTIPLIER], (1050, -1100))

    rotation = named_attribute(nodes, "rot", "QUATERNION", (800, -300)).outputs["Attribute"]
    round_ = math_node(group, "SUBTRACT", 1.0, flat, (1100, -550))
    shell = math_node(group, "MULTIPLY", round_, math_node(group, "SUBTRACT", 1.0, has_camera, (1000, -650)), (1100, -650))
    facing = math_node(group, "MULTIPLY", round_, has_camera, (1100, -750))

    turn, stretch = facing_transform(group, offset, forward.outputs[0], rotation, dilated.outputs[0],
                                     position.outputs[0], group_in.outputs[SCALE_MULTIPLIER])
    stretched = math_node(group, "ADD", 1.0, math_node(group, "MULTIPLY", facing, math_node(
        group, "SUBTRACT", stretch, 1.0)))                                   # 1 on flat discs and shells
    stored_points = delete.outputs["Geometry"]
    for attr, value, x in ((SIGMAS_ATTRIBUTE, group_in.outputs[SCALE_MULTIPLIER], -600), (SHELL_ATTRIBUTE, shell, -400),
                           (STRETCH_ATTRIBUTE, stretched, -200)):
        store = nodes.new("GeometryNodeStoreNamedAttribute")
        setattr(store, "data_type", "FLOAT")
        setattr(store, "domain", "POINT")
        store.inputs["Name"].default_value = attr  # type: ignore[attr-defined]
        store.location = (x, 400)
        links.new(stored_points, store.inputs["Geometry"])
        links.new(value, store.inputs["Value"])
        stored_points = store.outputs["Geometry"]

    disc = nodes.new("GeometryNodeMeshCircle")
    setattr(disc, "fill_type", "NGON")
    disc.inputs["Vertices"].default_value = DISC_VERTICES  # type: ignore[attr-defined]
    # the polygon circumscribes the unit circle, so the splat's whole m σ disc is inside it
    disc.inputs["Radius"].default_value = 1.0 / math.cos(math.pi / DISC_VERTICES)  # type: ignore[attr-defined]
    disc.location = (600, 300)
    sphere = nodes.new("GeometryNodeMeshIcoSphere")
    sphere.inputs["Radius"].default_value = 1.0  # type: ignore[attr-defined]
    sphere.inputs["Subdivisions"].default_value = 2  # type: ignore[attr-defined]
    sphere.location = (600, 100)
    smooth = nodes.new("GeometryNodeSetShadeSmooth")
    smooth.location = (800, 100)
    links.new(sphere.outputs["Mesh"], smooth.inputs[0])
    join = nodes.new("GeometryNodeJoinGeometry")
    join.location = (1600, 200)
    for shape, selection, y in ((disc.outputs["Mesh"], flat, 500), (disc.outputs["Mesh"], facing, 300),
                                (smooth.outputs[0], shell, 100)):
        with_material = nodes.new("GeometryNodeSetMaterial")
        with_material.inputs["Material"].default_value = material  # type: ignore[attr-defined]
        with_material.location = (950, y)
        links.new(shape, with_material.inputs["Geometry"])
        instance = nodes.new("GeometryNodeInstanceOnPoints")
        instance.location = (1100, y)
        links.new(stored_points, instance.inputs["Points"])
        links.new(selection, instance.inputs["Selection"])
        links.new(with_material.outputs["Geometry"], instance.inputs["Instance"])
        links.new(rotation, instance.inputs["Rotation"])
        links.new(extent, instance.inputs["Scale"])
        instances = instance.outputs["Instances"]
        if selection is facing:
            turned = nodes.new("GeometryNodeSetInstanceTransform")
            turned.location = (1300, y)
            links.new(instances, turned.inputs["Instances"])
            links.new(turn, turned.inputs["Transform"])
            instances = turned.outputs["Instances"]
        links.new(instances, join.inputs[0])
    links.new(join.outputs[0], group_out.inputs["Geometry"])
    return group


def facing_transform(group: bpy.types.GeometryNodeTree, offset: bpy.types.NodeSocket, forward: bpy.types.NodeSocket,
                     rotation: bpy.types.NodeSocket, sigma: bpy.types.NodeSocket, position: bpy.types.NodeSocket,
                     multiplier: bpy.types.NodeSocket) -> tuple[bpy.types.NodeSocket, bpy.types.NodeSocket]:
    """(instance matrix, stretch k) of a disc through the centre parallel to the camera's image plane,
    laid out in the Gaussian's own normalised frame.

    In that frame (x = R·diag(σ)·u) the Gaussian is isotropic; the world plane through the centre
    facing along the camera's forward axis n is the plane through the origin with normal
    ν = diag(σ)·Rᵀ·n there. Every view ray meets it at the Gaussian's own depth along n — the order
    in which 3DGS composites (it sorts by the centres' view depth), where a disc perpendicular to the
    ray would be met at the ray's densest point, an order that differs among deep stacks of
    overlapping Gaussians. A ray of direction a (unit, normalised frame) passing at distance b from
    the centre meets that plane within the ellipse (u₁ cos θ)² + u₂² ≤ b² (θ the angle between a and
    ν, u₁ along the plane's line of steepest tilt e₁), so the unit disc is stretched by k = 1 / cos θ
    along e₁ (at most MAX_STRETCH) and by m along both: columns R·diag(σ)·[k·m·e₁, m·e₂, m·ν]. The
    material undoes the stretch (``splat_stretch``), so its per-ray alpha stays exact.
    """
    nodes = group.nodes

    def to_local(vector: bpy.types.NodeSocket) -> bpy.types.NodeSocket:
        turn = nodes.new("FunctionNodeRotateVector")
        invert = nodes.new("FunctionNodeInvertRotation")
        group.links.new(rotation, invert.inputs[0])
        group.links.new(vector, turn.inputs["Vector"])
        group.links.new(invert.outputs[0], turn.inputs["Rotation"])
        return turn.outputs[0]

    view = vector_math_node(group, "NORMALIZE", vector_math_node(group, "DIVIDE", to_local(offset), sigma))
    normal = vector_math_node(group, "NORMALIZE", vector_math_node(group, "MULTIPLY", to_local(forward), sigma))
    parts = nodes.new("ShaderNodeSeparateXYZ")
    group.links.new(normal, parts.inputs[0])
    along_z = math_node(group, "GREATER_THAN", math_node(group, "ABSOLUTE", parts.outputs[2]), 0.9)
    helper = nodes.new("ShaderNodeCombineXYZ")   # x if the normal is near z, else z: never parallel to it
    group.links.new(along_z, helper.inputs[0])
    group.links.new(math_node(group, "SUBTRACT", 1.0, along_z), helper.inputs[2])
    # e₂ ⊥ both; a whisker of the helper keeps it defined when the ray runs along the normal
    e2 = vector_math_node(group, "NORMALIZE", vector_math_node(
        group, "ADD", vector_math_node(group, "CROSS_PRODUCT", normal, view),
        vector_math_node(group, "SCALE", vector_math_node(group, "CROSS_PRODUCT", normal, helper.outputs[0]), 1e-4)))
    e1 = vector_math_node(group, "CROSS_PRODUCT", e2, normal)
    cosine = math_node(group, "ABSOLUTE", vector_math_node(group, "DOT_PRODUCT", view, normal))
    stretch = math_node(group, "DIVIDE", 1.0, math_node(group, "MAXIMUM", cosine, 1.0 / MAX_STRETCH))
    matrix = nodes.new("FunctionNodeCombineMatrix")
    for column, (axis, factor) in enumerate(((e1, stretch), (e2, None), (normal, None), (None, None))):
        if axis is None:
            world = position
        else:
            turn = nodes.new("FunctionNodeRotateVector")
            length = multiplier if factor is None else math_node(group, "MULTIPLY", multiplier, factor)
            group.links.new(vector_math_node(group, "SCALE", vector_math_node(group, "MULTIPLY", axis, sigma), length),
                            turn.inputs["Vector"])
            group.links.new(rotation, turn.inputs["Rotation"])
            world = turn.outputs[0]
        xyz = nodes.new("ShaderNodeSeparateXYZ")
        group.links.new(world, xyz.inputs[0])
        for row in range(3):
            group.links.new(xyz.outputs[row], matrix.inputs[f"Column {column + 1} Row {row + 1}"])
        matrix.inputs[f"Column {column + 1} Row 4"].default_value = 1.0 if column == 3 else 0.0  # type: ignore[attr-defined]
    return matrix.outputs[0], stretch


def create_gaussians(name: str, positions: np.ndarray, rotations: np.ndarray, scales: np.ndarray,
                     opacities: np.ndarray, colors: np.ndarray, pixel_sizes: np.ndarray, focal_length: float,
                     opacity_threshold: float, scale_multiplier: float, collection: bpy.types.Collection,
                     scene: bpy.types.Scene) -> bpy.types.Object:
    """The Gaussians object in `collection`, its low-pass set for `scene`'s camera.

    positions [M,3], rotations [M,4] (w,x,y,z) both in Blender world; scales [M,3] std-devs;
    opacities [M]; colors [M,3] linear RGB; pixel_sizes [M] world size of a photo pixel at each
    Gaussian (the low-pass without a scene camera); focal_length (px) the starting Focal Length (px)
    (the photo's; the scene camera's if `scene` has one).
    """
    rotations, scales = sort_axes(rotations, scales)
    mesh = new_points_mesh(name, positions, {
        "rot": ("QUATERNION", rotations), "scale": ("FLOAT_VECTOR", scales), "opacity": ("FLOAT", opacities),
        PIXEL_SIZE_ATTRIBUTE: ("FLOAT", pixel_sizes),
    }, colors)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    material = splat_material(f"{name} Splat")
    mesh.materials.append(material)
    modifier = obj.modifiers.new(MODIFIER, "NODES")
    assert isinstance(modifier, bpy.types.NodesModifier)
    modifier.node_group = gaussians_node_group(f"{name} Splats", material)
    obj[ID_PROPERTY] = modifier.node_group[ID_PROPERTY] = SPLATS_ID  # what the handlers look for
    set_modifier_input(obj, modifier, OPACITY_THRESHOLD, float(opacity_threshold))
    set_modifier_input(obj, modifier, SCALE_MULTIPLIER, float(scale_multiplier))
    set_modifier_input(obj, modifier, LOW_PASS_INPUT, LOW_PASS)
    set_modifier_input(obj, modifier, FOCAL_LENGTH, float(camera_focal_px(scene) or focal_length))
    return obj
