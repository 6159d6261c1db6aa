"""The point cloud: one vertices-only mesh shown as points through a geometry-nodes modifier.

The mesh keeps every point with its attributes — ``Col`` (FLOAT_COLOR, linear), ``confidence``
(FLOAT), ``view`` (INT, the photo it came from) and ``cut_at_tie`` (BOOLEAN, below) — and the
modifier's inputs decide what is shown: points whose confidence is below ``Confidence Threshold``
are deleted live (nothing is lost, the slider can go back), each point is a sphere of ``Radius``.
A material reads ``Col``.

When many confidences tie at the import's threshold (a real scene can have a third of its points
at exactly 1.0), "confidence below the threshold" alone would leave out less than the stated share.
``cut_at_tie`` marks the tied points that the exact share leaves out (the export's choice,
``ConfidenceCut.keep``); the filter also deletes those while the threshold is at or above their
confidence, so at the import's threshold the shown points are exactly the exported ones, and
elsewhere the slider is a plain threshold.
"""
from __future__ import annotations

from typing import Optional

import bpy
import numpy as np

from .nodes import ModifierInput, named_attribute, new_geometry_group, new_node_material, set_modifier_input, thresholded_points

MODIFIER = "MV-DUSt3R Points"
THRESHOLD = "Confidence Threshold"
RADIUS = "Radius"
COLOR_ATTRIBUTE = "Col"
CUT_AT_TIE = "cut_at_tie"


def new_points_mesh(name: str, positions: np.ndarray, attributes: dict[str, tuple[str, np.ndarray]],
                    colors: np.ndarray) -> bpy.types.Mesh:
    """A vertices-only mesh: positions [M,3], `colors` [M,3] linear RGB as ``Col`` (opaque), and more
    point attributes given as {name: (type, values)} with type FLOAT, INT, BOOLEAN, FLOAT_VECTOR or QUATERNION."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(positions))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(positions, dtype=np.float32).ravel())
    rgba = np.ones((len(positions), 4), dtype=np.float32)
    rgba[:, :3] = colors
    color = mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    getattr(color, "data").foreach_set("color", rgba.ravel())
    for attr_name, (attr_type, values) in attributes.items():
        attribute = mesh.attributes.new(attr_name, attr_type, "POINT")  # type: ignore[arg-type]
        field = {"FLOAT": "value", "INT": "value", "BOOLEAN": "value", "QUATERNION": "value",
                 "FLOAT_VECTOR": "vector"}[attr_type]
        dtype = {"INT": np.int32, "BOOLEAN": np.bool_}.get(attr_type, np.float32)
        getattr(attribute, "data").foreach_set(field, np.ascontiguousarray(values, dtype=dtype).ravel())
    mesh.update()
    return mesh


def emission_material(name: str, attribute_type: str) -> bpy.types.Material:
    """A material showing the ``Col`` attribute as emitted light (the photo's own colours, unlit).

    `attribute_type` is GEOMETRY for point clouds, INSTANCER for instanced splats. The node tree is
    completed by the caller when it needs more than colour (see gaussians.py).
    """
    material, nodes, links = new_node_material(name)
    attribute = nodes.new("ShaderNodeAttribute")
    setattr(attribute, "attribute_type", attribute_type)
    setattr(attribute, "attribute_name", COLOR_ATTRIBUTE)
    attribute.location = (-400, 0)
    emission = nodes.new("ShaderNodeEmission")
    emission.location = (0, 0)
    links.new(attribute.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    return material


def points_node_group(name: str, material: bpy.types.Material) -> bpy.types.GeometryNodeTree:
    """Mesh → points of `Radius`, minus those with confidence < `Confidence Threshold`, with `material`."""
    group = new_geometry_group(name, [
        ModifierInput(THRESHOLD, "Points less confident than this are hidden (the network's confidences are 1 or "
                                 "more); the Result panel's Hide Least Confident sets it from a share of the points"),
        ModifierInput(RADIUS, "The radius of each point in scene units (the Result panel's Point Size scales the "
                              "automatic one)")])
    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    group_in.location = (-800, 0)
    group_out = nodes.new("NodeGroupOutput")
    group_out.location = (600, 0)
    to_points, delete = thresholded_points(group, group_in, "confidence", THRESHOLD, -500, 100)
    _also_delete_cut_ties(group, group_in, delete)
    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.inputs["Material"].default_value = material  # type: ignore[attr-defined]
    set_material.location = (300, 100)
    links.new(group_in.outputs[RADIUS], to_points.inputs["Radius"])
    links.new(delete.outputs["Geometry"], set_material.inputs["Geometry"])
    links.new(set_material.outputs["Geometry"], group_out.inputs["Geometry"])
    return group


def _also_delete_cut_ties(group: bpy.types.GeometryNodeTree, group_in: bpy.types.Node,
                          delete: bpy.types.Node) -> None:
    """Selection of `delete` := (confidence < threshold) OR (cut_at_tie AND confidence <= threshold)."""
    nodes, links = group.nodes, group.links
    below = delete.inputs["Selection"].links[0].from_node
    value = below.inputs["A"].links[0].from_node
    at_most = nodes.new("FunctionNodeCompare")
    setattr(at_most, "data_type", "FLOAT")
    setattr(at_most, "operation", "LESS_EQUAL")
    at_most.location = (below.location.x, below.location.y - 200)
    tie = named_attribute(nodes, CUT_AT_TIE, "BOOLEAN", (value.location.x, value.location.y - 300))
    both = nodes.new("FunctionNodeBooleanMath")
    setattr(both, "operation", "AND")
    both.location = (below.location.x + 180, below.location.y - 250)
    either = nodes.new("FunctionNodeBooleanMath")
    setattr(either, "operation", "OR")
    either.location = (below.location.x + 360, below.location.y - 150)
    links.new(value.outputs["Attribute"], at_most.inputs["A"])
    links.new(group_in.outputs[THRESHOLD], at_most.inputs["B"])
    links.new(at_most.outputs["Result"], both.inputs[0])
    links.new(tie.outputs["Attribute"], both.inputs[1])
    links.new(below.outputs["Result"], either.inputs[0])
    links.new(both.outputs["Boolean"], either.inputs[1])
    links.new(either.outputs["Boolean"], delete.inputs["Selection"])


def create_points(name: str, positions: np.ndarray, colors: np.ndarray, confidence: np.ndarray,
                  view: np.ndarray, threshold: float, radius: float, collection: bpy.types.Collection,
                  cut_at_tie: Optional[np.ndarray] = None) -> bpy.types.Object:
    """The point-cloud object in `collection`.

    positions [M,3] in Blender world; colors [M,3] linear RGB; confidence [M]; view [M] photo index;
    cut_at_tie [M] bool: points at exactly `threshold` that the cut leaves out (none when omitted).
    """
    ties = np.zeros(len(positions), dtype=bool) if cut_at_tie is None else cut_at_tie
    mesh = new_points_mesh(name, positions, {"confidence": ("FLOAT", confidence), "view": ("INT", view),
                                             CUT_AT_TIE: ("BOOLEAN", ties)}, colors)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    material = emission_material(f"{name} Colour", "GEOMETRY")
    mesh.materials.append(material)
    modifier = obj.modifiers.new(MODIFIER, "NODES")
    assert isinstance(modifier, bpy.types.NodesModifier)
    modifier.node_group = points_node_group(f"{name} Display", material)
    set_modifier_input(obj, modifier, THRESHOLD, float(threshold))
    set_modifier_input(obj, modifier, RADIUS, float(radius))
    return obj
