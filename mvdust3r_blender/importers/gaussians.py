"""The 3D Gaussians: points carrying the Gaussian attributes, instanced as oriented, scaled splats.

The mesh holds one vertex per Gaussian with ``rot`` (QUATERNION, w,x,y,z, Blender world), ``scale``
(FLOAT_VECTOR, the standard deviations along the Gaussian's own axes), ``opacity`` (FLOAT) and
``Col`` (FLOAT_COLOR, linear). A geometry-nodes modifier drops Gaussians below ``Opacity Threshold``
and instances a smooth unit icosphere on the rest, rotated by ``rot`` and scaled by
``scale × Scale Multiplier`` = m (the splat spans m σ). The material, reading the instancer's
attributes, gives each view ray the alpha a 3DGS rasteriser gives it: in the splat's own frame the
Gaussian is isotropic (one unit = m σ), and a ray passing at distance b from the centre has peak
density exp(−½ (m·b)²) — which equals the projected 2D Gaussian 3DGS evaluates, for any rotation and
anisotropic scale. b² = |P|² − (P·D)² from the shading point P and the unit view direction D, both in
object (instance) coordinates; alpha = opacity · exp(−½ m² b²) on front faces only. m is stored per
instance as ``splat_sigmas``.
"""
from __future__ import annotations

import bpy
import numpy as np

from .nodes import (new_geometry_group, new_node_material, named_attribute, set_modifier_input,
                    thresholded_points)
from .points import COLOR_ATTRIBUTE, new_points_mesh

MODIFIER = "MV-DUSt3R Gaussians"
OPACITY_THRESHOLD = "Opacity Threshold"
SCALE_MULTIPLIER = "Scale Multiplier"
SIGMAS_ATTRIBUTE = "splat_sigmas"


def splat_material(name: str) -> bpy.types.Material:
    """Emission of ``Col`` mixed with transparency by the Gaussian falloff (Cycles and EEVEE)."""
    material, nodes, links = new_node_material(name)
    material.surface_render_method = "DITHERED"

    def attribute(attr: str, y: float) -> bpy.types.Node:  # outputs: Color, Vector, Fac(tor)
        node = nodes.new("ShaderNodeAttribute")
        setattr(node, "attribute_type", "INSTANCER")
        setattr(node, "attribute_name", attr)
        node.location = (-1200, y)
        return node

    def math(operation: str, a: object, b: object, x: float, y: float) -> bpy.types.Node:
        node = nodes.new("ShaderNodeMath")
        setattr(node, "operation", operation)
        node.location = (x, y)
        for socket, value in ((node.inputs[0], a), (node.inputs[1], b)):
            if isinstance(value, bpy.types.NodeSocket):
                links.new(value, socket)
            else:
                socket.default_value = value  # type: ignore[attr-defined]
        return node

    def vector_math(operation: str, a: bpy.types.NodeSocket, b: bpy.types.NodeSocket | None,
                    x: float, y: float) -> bpy.types.Node:
        node = nodes.new("ShaderNodeVectorMath")
        setattr(node, "operation", operation)
        node.location = (x, y)
        links.new(a, node.inputs[0])
        if b is not None:
            links.new(b, node.inputs[1])
        return node

    colour, opacity, sigmas = attribute(COLOR_ATTRIBUTE, 300), attribute("opacity", 0), attribute(SIGMAS_ATTRIBUTE, -300)
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
    direction = vector_math("NORMALIZE", to_local.outputs[0], None, -1000, -600)
    along = vector_math("DOT_PRODUCT", coords.outputs["Object"], direction.outputs["Vector"], -800, -600)
    radial = vector_math("DOT_PRODUCT", coords.outputs["Object"], coords.outputs["Object"], -800, -900)
    b2 = math("SUBTRACT", radial.outputs["Value"],                            # b² = |P|² − (P·D)²
              math("MULTIPLY", along.outputs["Value"], along.outputs["Value"], -600, -600).outputs[0], -400, -750)
    m2 = math("MULTIPLY", sigmas.outputs[2], sigmas.outputs[2], -800, -300)
    exponent = math("MULTIPLY", math("MULTIPLY", b2.outputs[0], m2.outputs[0], -200, -450).outputs[0], -0.5, -100, -450)
    falloff = math("EXPONENT", exponent.outputs[0], 0.0, 0, -450)
    front = math("SUBTRACT", 1.0, geometry.outputs["Backfacing"], -400, -750)
    alpha = math("MULTIPLY", math("MULTIPLY", falloff.outputs[0], opacity.outputs[2], 200, -300).outputs[0],
                 front.outputs[0], 400, -300)
    emission = nodes.new("ShaderNodeEmission")
    emission.location = (200, 200)
    links.new(colour.outputs["Color"], emission.inputs["Color"])
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    transparent.location = (200, 0)
    mix = nodes.new("ShaderNodeMixShader")
    mix.location = (400, 100)
    links.new(alpha.outputs[0], mix.inputs[0])
    links.new(transparent.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], nodes["Material Output"].inputs["Surface"])
    return material


def gaussians_node_group(name: str, material: bpy.types.Material) -> bpy.types.GeometryNodeTree:
    """Points (minus opacity < threshold) → instances of a smooth icosphere, rotated and scaled."""
    group = new_geometry_group(name, [(OPACITY_THRESHOLD, "NodeSocketFloat"), (SCALE_MULTIPLIER, "NodeSocketFloat")])
    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    group_in.location = (-1000, 0)
    group_out = nodes.new("NodeGroupOutput")
    group_out.location = (800, 0)
    _, delete = thresholded_points(group, group_in, "opacity", OPACITY_THRESHOLD, -800, 200)
    sphere = nodes.new("GeometryNodeMeshIcoSphere")
    sphere.inputs["Radius"].default_value = 1.0  # type: ignore[attr-defined]
    sphere.inputs["Subdivisions"].default_value = 2  # type: ignore[attr-defined]
    sphere.location = (-700, -250)
    smooth = nodes.new("GeometryNodeSetShadeSmooth")
    smooth.location = (-500, -250)
    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.inputs["Material"].default_value = material  # type: ignore[attr-defined]
    set_material.location = (-300, -250)
    rotation = named_attribute(nodes, "rot", "QUATERNION", (-300, -450))
    scale = named_attribute(nodes, "scale", "FLOAT_VECTOR", (-300, -600))
    scaled = nodes.new("ShaderNodeVectorMath")
    setattr(scaled, "operation", "SCALE")
    scaled.location = (-100, -600)
    instance = nodes.new("GeometryNodeInstanceOnPoints")
    instance.location = (100, 200)
    store = nodes.new("GeometryNodeStoreNamedAttribute")
    setattr(store, "data_type", "FLOAT")
    setattr(store, "domain", "INSTANCE")
    store.inputs["Name"].default_value = SIGMAS_ATTRIBUTE  # type: ignore[attr-defined]
    store.location = (400, 200)
    links.new(sphere.outputs["Mesh"], smooth.inputs[0])
    links.new(smooth.outputs[0], set_material.inputs["Geometry"])
    links.new(scale.outputs["Attribute"], scaled.inputs[0])
    links.new(group_in.outputs[SCALE_MULTIPLIER], scaled.inputs["Scale"])
    links.new(delete.outputs["Geometry"], instance.inputs["Points"])
    links.new(set_material.outputs["Geometry"], instance.inputs["Instance"])
    links.new(rotation.outputs["Attribute"], instance.inputs["Rotation"])
    links.new(scaled.outputs["Vector"], instance.inputs["Scale"])
    links.new(instance.outputs["Instances"], store.inputs["Geometry"])
    links.new(group_in.outputs[SCALE_MULTIPLIER], store.inputs["Value"])
    links.new(store.outputs["Geometry"], group_out.inputs["Geometry"])
    return group


def create_gaussians(name: str, positions: np.ndarray, rotations: np.ndarray, scales: np.ndarray,
                     opacities: np.ndarray, colors: np.ndarray, opacity_threshold: float,
                     scale_multiplier: float, collection: bpy.types.Collection) -> bpy.types.Object:
    """The Gaussians object in `collection`.

    positions [M,3], rotations [M,4] (w,x,y,z) both in Blender world; scales [M,3] std-devs;
    opacities [M]; colors [M,3] linear RGB.
    """
    mesh = new_points_mesh(name, positions, {
        "rot": ("QUATERNION", rotations), "scale": ("FLOAT_VECTOR", scales), "opacity": ("FLOAT", opacities),
    }, colors)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    material = splat_material(f"{name} Splat")
    mesh.materials.append(material)
    modifier = obj.modifiers.new(MODIFIER, "NODES")
    assert isinstance(modifier, bpy.types.NodesModifier)
    modifier.node_group = gaussians_node_group(f"{name} Splats", material)
    set_modifier_input(obj, modifier, OPACITY_THRESHOLD, float(opacity_threshold))
    set_modifier_input(obj, modifier, SCALE_MULTIPLIER, float(scale_multiplier))
    return obj
