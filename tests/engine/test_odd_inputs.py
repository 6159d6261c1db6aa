"""Issue 23, second round of odd input (no Blender): every numeric option through one check, the cut
given twice or above every confidence, export names as one string, bundle fields read only after
their type and size are checked, checkpoints with NaN weights or a DataParallel prefix, outputs that
cannot be written. Each case failed before its fix."""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.checkpoint_files import write_training_checkpoint
from mvdust3r_blender.core.atomic import unwritable
from mvdust3r_blender.core.bundle import BundleError, read_bundle, write_bundle
from mvdust3r_blender.core.confidence import ConfidenceCut, make_cut
from mvdust3r_blender.core.errors import OptionError
from mvdust3r_blender.core.exports import EmptyExportWarning, export, parse_formats
from mvdust3r_blender.core.options import add_arguments, check_number, cut_from_arguments
from mvdust3r_blender.engine import checkpoint as ck
from mvdust3r_blender.engine.errors import CheckpointError
from test_bundle import make_bundle


# ---------------------------------------------------------------------------------------------
# one numeric check

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "3", None])
def test_check_number_refuses_what_is_not_a_finite_number(value: object) -> None:
    with pytest.raises(OptionError, match=r"point_size="):
        check_number("point_size", value, above=0.0)


def test_check_number_bounds_and_numpy_floats() -> None:
    assert check_number("opacity_threshold", np.float32(0.5), at_least=0.0, at_most=1.0) == 0.5
    assert check_number("opacity_threshold", 1, at_least=0.0, at_most=1.0) == 1.0
    with pytest.raises(OptionError, match=r"opacity_threshold=2 is out of range: it must be >= 0 and <= 1"):
        check_number("opacity_threshold", 2, at_least=0.0, at_most=1.0)
    with pytest.raises(OptionError, match=r"must be > 0"):
        check_number("scale_multiplier", 0.0, above=0.0)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_confidence_options_refuse_nan_and_infinity(value: float) -> None:
    with pytest.raises(OptionError, match="min_confidence"):
        ConfidenceCut(min_confidence=value)
    with pytest.raises(OptionError, match="confidence_drop_percent"):
        ConfidenceCut(confidence_drop_percent=value)


# ---------------------------------------------------------------------------------------------
# the confidence cut

def test_a_cut_given_both_ways_is_refused() -> None:
    with pytest.raises(OptionError, match="both confidence_drop_percent=10 and min_confidence=2"):
        make_cut(10, 2)
    assert make_cut(None, 2).min_confidence == 2 and make_cut(None, None).confidence_drop_percent == 3.0
    parser = argparse.ArgumentParser()
    add_arguments(parser, export_help="x")
    with pytest.raises(OptionError, match="not both"):
        cut_from_arguments(parser.parse_args(["--confidence-drop-percent", "10", "--min-confidence", "2"]))
    assert cut_from_arguments(parser.parse_args(["--min-confidence", "2"])).min_confidence == 2
    assert cut_from_arguments(parser.parse_args([])).confidence_drop_percent == 3.0


def test_a_cut_above_every_confidence_is_said_not_silent(tmp_path: Path) -> None:
    bundle = make_bundle()  # confidences in [1, 2]
    with pytest.warns(EmptyExportWarning, match=r"exports hold no points: min_confidence=50 leaves out every "
                                                r"point: the highest confidence is 2"):
        export(bundle, ["ply"], tmp_path / "out", cut=ConfidenceCut(min_confidence=50))
    said: list[str] = []
    export(bundle, ["glb"], tmp_path / "out", cut=ConfidenceCut(min_confidence=50), on_warning=said.append)
    assert len(said) == 1 and str(tmp_path / "out") in said[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export(bundle, ["ply"], tmp_path / "out", cut=ConfidenceCut(min_confidence=1.5))


def test_one_export_name_as_a_string_is_one_format(tmp_path: Path) -> None:
    assert parse_formats("ply") == ["ply"] and parse_formats("ply,glb") == ["ply", "glb"]
    assert list(export(make_bundle(), "ply", tmp_path)) == ["ply"]
    with pytest.raises(OptionError, match="not a list of format names"):
        parse_formats(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# bundle fields: type and size before reading

def _meta(path: Path, **edits: object) -> Path:
    bundle = make_bundle()
    bundle.meta.update(edits)
    arrays = {k: v for k, v in np.load(write_bundle(make_bundle(), path)).items()}
    arrays["meta"] = np.array(json.dumps({**json.loads(str(arrays["meta"])), **edits}))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("edit, says", [
    ({"camera_warnings": "all fine"}, r"'meta.camera_warnings' must be a list"),
    ({"camera_warnings": {"views": [0]}}, r"'meta.camera_warnings' must be a list"),
    ({"camera_warnings": ["text"]}, r"'meta.camera_warnings' entry 0 must be an object"),
    ({"camera_warnings": [{"views": ["one"], "message": "m"}]}, r"entry 0 has 'views' \['one'\]"),
    ({"camera_warnings": [{"views": [1.5], "message": "m"}]}, r"from 0 to 2"),
    ({"camera_warnings": [{"views": [7], "message": "m"}]}, r"from 0 to 2"),
    ({"camera_warnings": [{"views": [0], "message": 5}]}, r"text 'message'"),
    ({"photo_warnings": 3}, r"'meta.photo_warnings' must be a list"),
    ({"photo_orientation": [1, 6]}, r"'meta.photo_orientation' must be 3 EXIF orientations"),
    ({"photo_orientation": [1, 6, 9]}, r"'meta.photo_orientation'"),
])
def test_meta_fields_the_import_reads_are_checked(tmp_path: Path, edit: dict[str, object], says: str) -> None:
    path = _meta(tmp_path / "b.npz", **edit)
    with pytest.raises(BundleError, match=says) as err:
        read_bundle(path)
    assert str(path) in err.value.message


def test_good_warning_lists_read(tmp_path: Path) -> None:
    path = _meta(tmp_path / "b.npz", camera_warnings=[{"views": [0, 2], "message": "uncertain"}],
                 photo_warnings=[{"views": [], "message": "skipped x.heic"}], photo_orientation=[1, 6, 8])
    assert read_bundle(path).meta["photo_orientation"] == [1, 6, 8]


def _add_entry(path: Path, name: str, header_shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> None:
    """Append a raw .npy entry whose header declares `header_shape` float64 but holds `payload`."""
    header = {"descr": "<f8", "fortran_order": False, "shape": header_shape}
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{name}.npy", buf.getvalue() + payload)


def test_an_entry_declaring_9_tib_is_never_read(tmp_path: Path) -> None:
    path = write_bundle(make_bundle(), tmp_path / "b.npz")
    _add_entry(path, "extra_debug", (9 * 2 ** 40 // 8,))
    assert read_bundle(path).num_views == 3  # an entry the reader does not know is not read at all


def test_a_known_entry_declaring_more_than_it_holds_is_refused_before_allocation(tmp_path: Path) -> None:
    source = write_bundle(make_bundle(), tmp_path / "b.npz")
    path = tmp_path / "lying.npz"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        for info in old.infolist():
            if info.filename != "conf.npy":
                new.writestr(info, old.read(info))
    _add_entry(path, "conf", (9 * 2 ** 40 // 8,))
    with pytest.raises(BundleError, match=r"entry 'conf' declares a float64 array of shape \[1236950581248\]") as err:
        read_bundle(path)
    assert "damaged" in err.value.message and str(path) in err.value.message


# ---------------------------------------------------------------------------------------------
# checkpoints

def _golden_state(golden: Path) -> tuple[dict[str, torch.Tensor], str]:
    raw = ck.read_checkpoint(golden / "mvd_reduced_ckpt.pth")
    return {k: v.clone() for k, v in raw.state_dict.items()}, raw.model_string


def test_nan_weights_are_refused_at_load_naming_the_file(golden: Path, tmp_path: Path) -> None:
    state, string = _golden_state(golden)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][..., 0] = math.nan
    path = write_training_checkpoint(tmp_path / "diverged.pth", state, string, with_moments=False)
    with pytest.raises(CheckpointError, match=r"diverged\.pth: 1 weight tensor hold NaN or infinite values") as err:
        ck.load_model(path, cache_dir=tmp_path / "cache")
    assert key in err.value.message and "diverged" in err.value.hint
    assert not any((tmp_path / "cache").glob("*.safetensors"))  # no cache of bad weights


def test_a_dataparallel_checkpoint_loads_as_the_same_network(golden: Path, tmp_path: Path) -> None:
    state, string = _golden_state(golden)
    plain = write_training_checkpoint(tmp_path / "plain.pth", state, string, with_moments=False)
    wrapped = write_training_checkpoint(tmp_path / "dp.pth", {f"module.{k}": v for k, v in state.items()}, string,
                                        with_moments=False)
    a = ck.load_model(plain, cache_dir=tmp_path / "c1").state_dict()
    b = ck.load_model(wrapped, cache_dir=tmp_path / "c2").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# outputs that cannot be written, known before the job (`read_only`: tests/conftest.py)

def test_unwritable_names_the_file_not_a_hidden_probe(read_only: Path, tmp_path: Path) -> None:
    problem = unwritable(read_only / "one.blend")
    assert problem is not None
    assert problem[0].startswith(f"cannot write {read_only / 'one.blend'}: Read-only file system")
    assert ".probe" not in problem[0] and ".part" not in problem[0]
    assert unwritable(tmp_path / "new" / "one.blend") is None and not any((tmp_path / "new").iterdir())
    assert unwritable(tmp_path)[0].endswith("it is a folder")  # type: ignore[index]
    os.listdir(read_only)
