"""Words for artists: every property the extension shows has a tooltip and a range, every input of
the modifiers an import makes has a tooltip and limits, and a broken bundle is explained in the
add-on's words (naming the file), not only a library's."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import bpy
import numpy as np
import pytest
from installed import module

_SKIPPED = {"rna_type", "name", "filepath", "directory", "files", "filter_glob", "filter_folder", "filter_image",
            "runtime_summary", "collection", "camera", "index"}


def shown_properties() -> list[tuple[str, Any]]:
    properties = module("properties")
    operators = [("import_scene", "mvdust3r_bundle"), ("mvdust3r_blender", "export_result")]
    groups = [properties.MVDUST3R_PG_scene, properties.MVDUST3R_PG_photo, module("result_settings").MVDUST3R_PG_result,
              module("preferences").MVDUST3R_AddonPreferences]
    found = []
    for cls in groups:
        ours = {name for c in cls.__mro__ for name in getattr(c, "__annotations__", {})}
        found += [(f"{cls.__name__}.{p.identifier}", p) for p in cls.bl_rna.properties
                  if p.identifier in ours and p.identifier not in _SKIPPED and not p.is_hidden]
    for group, name in operators:
        rna = getattr(getattr(bpy.ops, group), name).get_rna_type()
        found += [(f"{group}.{name}.{p.identifier}", p) for p in rna.properties
                  if p.identifier not in _SKIPPED and not p.is_hidden]
    return found


def test_every_shown_property_has_a_tooltip_and_a_range(ext: ModuleType) -> None:
    missing = [name for name, prop in shown_properties() if not prop.description.strip()]
    assert not missing, f"no tooltip: {missing}"
    unbounded = [name for name, prop in shown_properties()
                 if prop.type in ("FLOAT", "INT") and (prop.hard_min < -1e30 or prop.hard_max > 1e30)]
    assert not unbounded, f"no limits: {unbounded}"


def test_every_modifier_input_has_a_tooltip_and_limits(ext: ModuleType, make_bundle: Callable[..., Any]) -> None:
    result = module("api").import_bundle(make_bundle(), scene=bpy.context.scene)
    checked = 0
    for obj in (result.points, result.gaussians):
        for modifier in obj.modifiers:
            for item in modifier.node_group.interface.items_tree:
                if item.item_type != "SOCKET" or item.in_out != "INPUT" or item.socket_type == "NodeSocketGeometry":
                    continue
                checked += 1
                assert item.description.strip(), f"{modifier.name} › {item.name} has no tooltip"
                assert item.min_value >= 0.0 and item.max_value > item.min_value, f"{modifier.name} › {item.name}"
    assert checked == 6


def test_a_broken_bundle_is_explained_in_our_words(ext: ModuleType, tmp_path: Path) -> None:
    objects = tmp_path / "objects.npz"
    np.savez(objects, meta=np.array([{"a": 1}], dtype=object))
    not_zip = tmp_path / "not-a-zip.npz"
    not_zip.write_bytes(b"hello")
    for path in (objects, not_zip):
        with pytest.raises(module("core.bundle").BundleError) as caught:
            module("core.bundle").read_bundle(path)
        message = str(caught.value)
        assert str(path) in message and "not a reconstruction bundle" in message, message
        assert "pickle" not in message, message  # numpy's words alone would say 'pickled data'
        print(message)
