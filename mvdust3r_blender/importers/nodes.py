"""Small builders for the geometry-node groups and materials the importers create.

Interface identifiers (``Socket_<n>``) depend on creation order, so modifier inputs are always
looked up by their display name here, never hard-coded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bpy


@dataclass(frozen=True)
class ModifierInput:
    """A float input of a modifier as the artist sees it: its tooltip and the range it accepts."""

    name: str
    description: str
    min_value: float = 0.0
    max_value: float = 3.4e38


def new_geometry_group(name: str, inputs: list[ModifierInput]) -> bpy.types.GeometryNodeTree:
    """A modifier node group with a Geometry input, the float `inputs` and a Geometry output."""
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")  # type: ignore[arg-type]
    assert isinstance(group, bpy.types.GeometryNodeTree) and group.interface is not None
    group.interface.new_socket(name="Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    for spec in inputs:
        socket = group.interface.new_socket(name=spec.name, in_out="INPUT", socket_type="NodeSocketFloat")
        socket.description = spec.description
        setattr(socket, "min_value", spec.min_value)
        setattr(socket, "max_value", spec.max_value)
    group.interface.new_socket(name="Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    return group


def input_identifier(group: bpy.types.NodeTree, name: str) -> str:
    """The modifier key of the group input called `name`."""
    assert group.interface is not None
    for item in group.interface.items_tree:
        if item.item_type == "SOCKET" and getattr(item, "in_out", None) == "INPUT" and getattr(item, "name") == name:
            return str(getattr(item, "identifier"))
    raise KeyError(f"node group {group.name!r} has no input {name!r}")


def set_modifier_input(obj: bpy.types.Object, modifier: bpy.types.NodesModifier, name: str, value: Any) -> None:
    """Set a geometry-nodes modifier input by its name and make Blender re-evaluate the object."""
    assert modifier.node_group is not None
    modifier[input_identifier(modifier.node_group, name)] = value
    obj.update_tag()


def get_modifier_input(modifier: bpy.types.NodesModifier, name: str) -> Any:
    """The value of a geometry-nodes modifier input, by its name."""
    assert modifier.node_group is not None
    return modifier[input_identifier(modifier.node_group, name)]


def named_attribute(nodes: bpy.types.Nodes, name: str, data_type: str, location: tuple[float, float]) -> bpy.types.Node:
    """A Named Attribute node reading `name` as `data_type` (FLOAT, FLOAT_VECTOR, QUATERNION, ...)."""
    node = nodes.new("GeometryNodeInputNamedAttribute")
    setattr(node, "data_type", data_type)
    node.inputs["Name"].default_value = name  # type: ignore[attr-defined]
    node.location = location
    return node


def new_node_material(name: str) -> tuple[bpy.types.Material, bpy.types.Nodes, bpy.types.NodeLinks]:
    """A material with an empty node tree and a Material Output node; (material, nodes, links)."""
    material = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # node materials are the only kind from 5.0 on (use_nodes deprecated)
        material.use_nodes = True
    tree = material.node_tree
    assert tree is not None
    tree.nodes.clear()
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    output.location = (600, 0)
    return material, tree.nodes, tree.links


def thresholded_points(group: bpy.types.GeometryNodeTree, group_in: bpy.types.Node, attribute: str,
                       threshold_input: str, x: float, y: float) -> tuple[bpy.types.Node, bpy.types.Node]:
    """Mesh from `group_in` → points, minus those whose FLOAT `attribute` is below the group input
    `threshold_input` (a live filter). Returns (Mesh to Points, Delete Geometry): the first takes a
    radius, the second outputs the kept points.
    Nodes are laid out to the right of (`x`, `y`); the caller wires the rest (radius, instancing)."""
    nodes, links = group.nodes, group.links
    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.location = (x, y)
    value = named_attribute(nodes, attribute, "FLOAT", (x, y - 250))
    below = nodes.new("FunctionNodeCompare")
    setattr(below, "data_type", "FLOAT")
    setattr(below, "operation", "LESS_THAN")
    below.location = (x + 250, y - 250)
    delete = nodes.new("GeometryNodeDeleteGeometry")
    setattr(delete, "domain", "POINT")
    delete.location = (x + 500, y)
    links.new(group_in.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(value.outputs["Attribute"], below.inputs["A"])
    links.new(group_in.outputs[threshold_input], below.inputs["B"])
    links.new(to_points.outputs["Points"], delete.inputs["Geometry"])
    links.new(below.outputs["Result"], delete.inputs["Selection"])
    return to_points, delete


Operand = Any   # a node socket to link from, or a constant for the input's default value


def _connect(links: bpy.types.NodeLinks, socket: bpy.types.NodeSocket, value: Operand) -> None:
    if isinstance(value, bpy.types.NodeSocket):
        links.new(value, socket)
    else:
        socket.default_value = value  # type: ignore[attr-defined]


def math_node(tree: bpy.types.NodeTree, operation: str, a: Operand, b: Operand = 0.0,
              location: tuple[float, float] = (0.0, 0.0)) -> bpy.types.NodeSocket:
    """The output of a Math node (shader and geometry trees alike) computing `operation`(a, b)."""
    node = tree.nodes.new("ShaderNodeMath")
    setattr(node, "operation", operation)
    node.location = location
    _connect(tree.links, node.inputs[0], a)
    _connect(tree.links, node.inputs[1], b)
    return node.outputs[0]


def vector_math_node(tree: bpy.types.NodeTree, operation: str, a: Operand, b: Operand = None,
                     location: tuple[float, float] = (0.0, 0.0)) -> bpy.types.NodeSocket:
    """The main output of a Vector Math node: "Value" for DOT_PRODUCT and LENGTH, else "Vector".
    `b` goes to the second vector input, or to "Scale" for SCALE."""
    node = tree.nodes.new("ShaderNodeVectorMath")
    setattr(node, "operation", operation)
    node.location = location
    _connect(tree.links, node.inputs[0], a)
    if b is not None:
        _connect(tree.links, node.inputs["Scale"] if operation == "SCALE" else node.inputs[1], b)
    return node.outputs["Value" if operation in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else "Vector"]
