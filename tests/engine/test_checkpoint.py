"""Checkpoint loading: safe weights-only reads, config from the file, the cache, errors, memory.

Every file here is real: the golden reduced checkpoints written by the official code, and files
written in tmp_path the way the official training code writes them (checkpoint_files.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.helpers.checkpoint_files import random_state_dict, write_training_checkpoint
from network_golden import config_from_json, flatten_outputs
from mvdust3r_blender.engine import checkpoint as ck
from mvdust3r_blender.core import registry
from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.errors import CheckpointError, DeviceError
from mvdust3r_blender.engine.model import MultiViewModel, build_model
from mvdust3r_blender.engine.model_string import ConstructorCall, format_model_string, parse_model_string

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("mvd", "mvdp")
MVD_STRING = ("AsymmetricCroCo3DStereoMultiView(pos_embed='RoPE100', img_size=(224, 224), head_type='linear', "
              "output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, 1e9), enc_embed_dim=1024, "
              "enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12, GS = True, "
              "sh_degree=0, pts_head_config = {'skip':True})")  # scripts/train_mvd.sh, verbatim
MVDP_STRING = MVD_STRING[:-1] + ", m_ref_flag=True)"            # scripts/train_mvdp_stage*.sh


def golden_ckpt(golden: Path, variant: str) -> Path:
    path = golden / f"{variant}_reduced_ckpt.pth"
    assert path.is_file(), f"golden checkpoint missing: {path}"
    return path


def golden_raw(golden: Path, variant: str) -> ck.RawCheckpoint:
    return ck.read_checkpoint(golden_ckpt(golden, variant))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def rewrite(golden: Path, variant: str, path: Path, model_string: str | None = None, drop: tuple[str, ...] = (),
            add: dict[str, torch.Tensor] | None = None) -> Path:
    """A golden checkpoint written again with an edited constructor string or state dict."""
    raw = golden_raw(golden, variant)
    state = {k: v.clone() for k, v in raw.state_dict.items() if not k.startswith(drop)}
    state.update(add or {})
    return write_training_checkpoint(path, state, model_string or raw.model_string, with_moments=False)


# ---------------------------------------------------------------------------------------------
# the constructor string

def test_parse_model_string_reads_literals_inf_tuples_dicts() -> None:
    call = parse_model_string(MVDP_STRING)
    assert call.class_name == "AsymmetricCroCo3DStereoMultiView"
    assert call.kwargs["depth_mode"] == ("exp", -float("inf"), float("inf"))
    assert call.kwargs["conf_mode"] == ("exp", 1, 1e9)
    assert call.kwargs["img_size"] == (224, 224)
    assert call.kwargs["pts_head_config"] == {"skip": True}
    assert call.kwargs["GS"] is True and call.kwargs["m_ref_flag"] is True and call.kwargs["enc_depth"] == 24
    nested = parse_model_string("dust3r.model.X(a=[1, -2.5, +3], b={'k': (None, 'v')}, c=-inf, d=nan)")
    assert nested.class_name == "X" and nested.kwargs["a"] == [1, -2.5, 3]
    assert nested.kwargs["b"] == {"k": (None, "v")} and nested.kwargs["c"] == -float("inf")
    assert np.isnan(nested.kwargs["d"])
    assert parse_model_string("X()") == ConstructorCall("X", {})


@pytest.mark.parametrize("text, complaint", [
    ("X(a=__import__('os').system('touch pwned'))", "only literals"),
    ("X(a=open('f'))", "only literals"),
    ("X(a=1 + 2)", "only literals"),
    ("X(a=-'s')", "not a number"),
    ("X(1, 2)", "positional"),
    ("X(**{'a': 1})", "**kwargs"),
    ("X(a=b)", "only literals"),
    ("[X()]", "not a constructor call"),
    ("X(", "not a Python expression"),
    ("X()()", "not a class name"),
])
def test_parse_model_string_refuses_code(text: str, complaint: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=complaint.replace("*", r"\*")):
        parse_model_string(text)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("variant", VARIANTS)
def test_format_model_string_writes_the_official_string(golden: Path, variant: str) -> None:
    meta = json.loads((golden / f"{variant}_reduced_config.json").read_text())
    assert format_model_string(config_from_json(golden / f"{variant}_reduced_config.json")) == meta["_model_string"]


def test_format_model_string_round_trips_through_the_parser() -> None:
    for config in (ModelConfig.released_mvd(), ModelConfig.released_mvdp(), replace(ModelConfig.released_mvdp(), n_ref=3)):
        kwargs = parse_model_string(format_model_string(config)).kwargs
        assert kwargs["enc_num_heads"] == config.enc_num_heads and kwargs["img_size"] == config.img_size
        assert kwargs.get("m_ref_flag", False) == config.multi_ref and kwargs.get("n_ref", 1) == config.n_ref


# ---------------------------------------------------------------------------------------------
# ModelConfig from a checkpoint

@pytest.mark.parametrize("variant", VARIANTS)
def test_config_of_golden_checkpoints_matches_their_json(golden: Path, variant: str) -> None:
    raw = golden_raw(golden, variant)
    config = ck.config_from_checkpoint(raw.state_dict, raw.model_string)
    assert config == config_from_json(golden / f"{variant}_reduced_config.json")
    assert (config.skip_dim, config.gs_mlp_dim, config.img_size) == (16, 32, (64, 64))  # from shapes / string


@pytest.mark.parametrize("string, expected", [
    (MVD_STRING, ModelConfig.released_mvd()),
    (MVDP_STRING, ModelConfig.released_mvdp()),                       # no n_ref in the string: the demo's 4
    (MVDP_STRING[:-1] + ", n_ref=3)", replace(ModelConfig.released_mvdp(), n_ref=3)),
    (MVD_STRING.replace("pos_embed", "patch_embed_cls='ManyAR_PatchEmbed', landscape_only=False, pos_embed"),
     ModelConfig.released_mvd()),
])
def test_config_of_released_strings_and_shapes(string: str, expected: ModelConfig) -> None:
    with torch.device("meta"):
        shapes = build_model(expected).state_dict()
    assert ck.config_from_checkpoint(shapes, string) == expected


@pytest.mark.parametrize("edit, named", [
    (("head_type='linear'", "head_type='dpt'"), "head_type"),
    (("depth_mode=('exp', -inf, inf)", "depth_mode=('exp', 0, inf)"), "depth_mode"),
    (("conf_mode=('exp', 1, 1e+09)", "conf_mode=('exp', 1, inf)"), "conf_mode"),
    (("sh_degree=0", "sh_degree=1"), "sh_degree"),
    (("pos_embed='RoPE100', ", "pos_embed='RoPE10', "), "pos_embed"),
    (("pos_embed='RoPE100', ", ""), "pos_embed='cosine'"),       # the official default when absent
    (("GS=True", "GS=True, GS_skip=True"), "GS_skip"),
    (("GS=True", "GS=True, fancy_option=2"), "fancy_option"),
    (("enc_num_heads=2", "enc_num_heads=3"), "encoder width 128 with 3 heads"),
    (("enc_depth=2", "enc_depth=3"), "enc_depth=3 but the weights have 2"),
    (("dec_embed_dim=96", "dec_embed_dim=128"), "dec_embed_dim=128 but the weights have 96"),
    (("img_size=(64, 64)", "img_size=(64, 60)"), "not a multiple of the patch size"),
    (("pts_head_config={'skip': True}", "pts_head_config={'skip': True}, n_ref=4"), "n_ref=4 without m_ref_flag"),
    (("pts_head_config={'skip': True}", "pts_head_config={'skip': True}, m_ref_flag=True"), "m_ref_flag=True"),
    (("GS=True", "GS=eval('1')"), "cannot read its constructor string"),
])
def test_unsupported_settings_are_refused_by_name(golden: Path, edit: tuple[str, str], named: str) -> None:
    raw = golden_raw(golden, "mvd")
    assert edit[0] in raw.model_string
    with pytest.raises(CheckpointError, match="mvd.pth") as err:
        ck.config_from_checkpoint(raw.state_dict, raw.model_string.replace(*edit), source="mvd.pth")
    assert named in err.value.message


# ---------------------------------------------------------------------------------------------
# loading

@pytest.mark.parametrize("variant", VARIANTS)
def test_load_model_gives_the_checkpoint_weights_in_eval_mode(golden: Path, variant: str, cache: Path) -> None:
    raw = golden_raw(golden, variant)
    model = ck.load_model(golden_ckpt(golden, variant), cache_dir=cache)
    assert isinstance(model, MultiViewModel) and not model.training
    assert model.config == config_from_json(golden / f"{variant}_reduced_config.json")
    state = model.state_dict()
    assert state.keys() == raw.state_dict.keys()
    assert all(torch.equal(state[k], raw.state_dict[k]) and state[k].dtype == raw.state_dict[k].dtype for k in state)


def test_loaded_model_reproduces_the_golden_outputs(golden: Path, cache: Path) -> None:
    model = ck.load_model(golden_ckpt(golden, "mvdp"), cache_dir=cache)   # through the cache
    with np.load(golden / "mvdp_b2_v4_48x48.inputs.npz") as f:
        views = [{"img": torch.from_numpy(f[f"view{v}.img"]), "true_shape": torch.from_numpy(f[f"view{v}.true_shape"])}
                 for v in range(4)]
    with torch.no_grad():
        got = flatten_outputs(*model(views[0], views[1:]))
    with np.load(golden / "mvdp_b2_v4_48x48.outputs.npz") as f:
        for key in ("pred1.pts3d", "pred1.conf", "pred2s.2.pts3d_in_other_view", "pred2s.0.rotation"):
            np.testing.assert_allclose(got[key], f[key], rtol=1e-4, atol=1e-4, err_msg=key)


def test_cache_is_written_once_and_then_read(golden: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = golden_ckpt(golden, "mvd")
    target = ck.cache_path(source, cache)
    ck.load_model(source, cache_dir=cache)
    assert target.is_file() and [p.name for p in cache.iterdir()] == [target.name]   # no temporary left
    with safe_open(str(target), framework="pt") as f:
        meta = f.metadata()
    assert meta["source_path"] == str(source.resolve()) and meta["source_size"] == str(source.stat().st_size)
    assert json.loads(meta["config"])["enc_embed_dim"] == 128
    # Prove the second load reads the cache: the pickle is not opened again.
    reads: list[Path] = []
    original = ck.read_checkpoint
    monkeypatch.setattr(ck, "read_checkpoint", lambda path: reads.append(Path(path)) or original(path))
    model = ck.load_model(source, cache_dir=cache)
    assert reads == [] and torch.equal(model.enc_norm.weight, load_file(str(target))["enc_norm.weight"])


@pytest.mark.parametrize("edit", ["scaled", "nan", "restored-mtime"])
def test_an_edited_cache_with_an_intact_header_is_rebuilt(golden: Path, cache: Path, edit: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """One tensor multiplied by 1.3 (or made NaN) in place, header untouched — even
    with the file's modification time put back — is found by its checksum and rebuilt with a warning."""
    source = golden_ckpt(golden, "mvd")
    target = ck.cache_path(source, cache)
    ck.load_model(source, cache_dir=cache)
    good = target.read_bytes()
    good_tensors = {k: v.clone() for k, v in load_file(str(target)).items()}
    stat = target.stat()
    with safe_open(str(target), framework="pt") as f:
        good_meta = f.metadata()
        header_len = int.from_bytes(good[:8], "little")
        start, end = json.loads(good[8:8 + header_len])["enc_norm.weight"]["data_offsets"]
    values = np.frombuffer(good, dtype=np.float32, count=(end - start) // 4, offset=8 + header_len + start).copy()
    values = values * np.float32(1.3) if edit != "nan" else np.full_like(values, np.nan)
    with open(target, "r+b") as handle:
        handle.seek(8 + header_len + start)
        handle.write(values.tobytes())
    if edit == "restored-mtime":
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.read_bytes()[:8 + header_len] == good[:8 + header_len] and target.read_bytes() != good
    with caplog.at_level(logging.WARNING, logger=ck.__name__):
        model = ck.load_model(source, cache_dir=cache)
    assert f"the checkpoint cache {target} is damaged: the bytes of enc_norm.weight do not match" in caplog.text
    assert f"rebuilding it from {source.resolve()}" in caplog.text
    assert torch.equal(model.enc_norm.weight, golden_raw(golden, "mvd").state_dict["enc_norm.weight"])
    rebuilt = load_file(str(target))   # rebuilt from the source
    assert rebuilt.keys() == good_tensors.keys() and all(torch.equal(rebuilt[k], good_tensors[k]) for k in rebuilt)
    with safe_open(str(target), framework="pt") as f:
        assert f.metadata() == good_meta


def test_a_cache_without_checksums_is_rebuilt_with_them(golden: Path, cache: Path) -> None:
    """A cache written before checksums existed is not trusted: it is rebuilt once, with them."""
    source = golden_ckpt(golden, "mvd")
    target = ck.cache_path(source, cache)
    ck.load_model(source, cache_dir=cache)
    with safe_open(str(target), framework="pt") as f:
        meta = f.metadata()
    tensors = {k: v.clone() for k, v in load_file(str(target)).items()}
    save_file(tensors, str(target), metadata={k: v for k, v in meta.items() if k != "tensor_crc32"})
    ck.load_model(source, cache_dir=cache)
    with safe_open(str(target), framework="pt") as f:
        assert json.loads(f.metadata()["tensor_crc32"]) == ck.tensor_digests(tensors)


def test_stale_cache_is_rebuilt_from_the_changed_source(golden: Path, tmp_path: Path, cache: Path) -> None:
    source = rewrite(golden, "mvd", tmp_path / "model.pth")
    first = ck.load_model(source, cache_dir=cache)
    raw = golden_raw(golden, "mvd")
    changed = {k: v.clone() for k, v in raw.state_dict.items()}
    changed["enc_norm.weight"] += 1.0
    write_training_checkpoint(source, changed, raw.model_string, with_moments=False)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))  # a new mtime, surely
    second = ck.load_model(source, cache_dir=cache)
    assert torch.equal(second.enc_norm.weight, first.enc_norm.weight + 1.0)
    with safe_open(str(ck.cache_path(source, cache)), framework="pt") as f:
        assert f.metadata()["source_mtime_ns"] == str(source.stat().st_mtime_ns)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "foreign-metadata", "missing-tensor"])
def test_corrupt_cache_is_rebuilt_never_trusted(golden: Path, cache: Path, damage: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    source = golden_ckpt(golden, "mvd")
    target = ck.cache_path(source, cache)
    ck.load_model(source, cache_dir=cache)
    data = target.read_bytes()
    good = {k: v.clone() for k, v in load_file(str(target)).items()}
    with safe_open(str(target), framework="pt") as f:
        good_meta = f.metadata()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        target.write_bytes(os.urandom(4096))
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        tensors = load_file(str(target))
        with safe_open(str(target), framework="pt") as f:
            meta = f.metadata()
        if damage == "foreign-metadata":
            meta = {"format": "someone-else"}
        else:
            del tensors["dec_norm.bias"]
        save_file({k: v.clone() for k, v in tensors.items()}, str(target), metadata=meta)
    with caplog.at_level(logging.INFO, logger=ck.__name__):
        model = ck.load_model(source, cache_dir=cache)
    assert "rebuilding" in caplog.text
    assert torch.equal(model.dec_norm.bias, golden_raw(golden, "mvd").state_dict["dec_norm.bias"])
    rebuilt = load_file(str(target))   # rebuilt in full
    assert rebuilt.keys() == good.keys() and all(torch.equal(rebuilt[k], good[k]) for k in good)
    with safe_open(str(target), framework="pt") as f:
        assert f.metadata() == good_meta


def test_unwritable_cache_still_loads_and_warns(golden: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger=ck.__name__):
        model = ck.load_model(golden_ckpt(golden, "mvd"), cache_dir=blocker / "cache")
    assert isinstance(model, MultiViewModel) and "cannot write the checkpoint cache" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    shared = torch.zeros(8)
    with pytest.raises(Exception):
        ck._write_safetensors({"a": shared, "b": shared[:4]}, {}, tmp_path / "out.safetensors")  # aliasing: refused
    assert list(tmp_path.iterdir()) == []


def test_cache_location_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ck.CACHE_ENV, str(tmp_path / "mine"))
    assert ck.default_cache_dir() == tmp_path / "mine"
    assert ck.cache_path("/x/MVDp_s2.pth").parent == tmp_path / "mine"
    assert ck.cache_path("/x/MVDp_s2.pth").name.startswith("MVDp_s2-")
    assert ck.cache_path("/x/MVDp_s2.pth") != ck.cache_path("/y/MVDp_s2.pth")   # one cache per source path
    blob = tmp_path / "blobs" / "474e814e"
    blob.parent.mkdir()
    blob.write_bytes(b"")
    (tmp_path / "MVDp_s1.pth").symlink_to(blob)                                  # a Hugging Face cache layout
    linked = ck.cache_path(tmp_path / "MVDp_s1.pth")
    assert linked.name.startswith("MVDp_s1-") and linked.name[-28:] == ck.cache_path(blob).name[-28:]
    monkeypatch.delenv(ck.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ck.default_cache_dir() == tmp_path / "xdg" / "mvdust3r_blender"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ck.default_cache_dir() == Path.home() / ".cache" / "mvdust3r_blender"


# ---------------------------------------------------------------------------------------------
# our own .safetensors files, dtype and device

def test_save_safetensors_fp16_round_trip(golden: Path, tmp_path: Path, cache: Path) -> None:
    fp32 = ck.load_model(golden_ckpt(golden, "mvdp"), cache_dir=cache)
    path = ck.save_safetensors(fp32, fp32.config, tmp_path / "small.safetensors", dtype=torch.float16)
    stored = load_file(str(path))
    assert stored["enc_blocks.0.attn.qkv.weight"].dtype == torch.float16
    assert stored["downstream_head1.skip_proj.1.norm.running_var"].dtype == torch.float32   # BatchNorm stays fp32
    assert stored["downstream_head1.skip_proj.1.norm.num_batches_tracked"].dtype == torch.int64
    assert path.stat().st_size < 0.6 * ck.cache_path(golden_ckpt(golden, "mvdp"), cache).stat().st_size
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask   # a file to ship: ordinary permissions

    loaded = ck.load_model(path, dtype=torch.float32)
    assert loaded.config == fp32.config and not loaded.training
    for key, value in fp32.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype
        torch.testing.assert_close(got, value, rtol=1e-3, atol=1e-3)
    on_cpu = ck.load_model(path)            # dtype=None on the CPU: widened (fp16 convolutions are slow there)
    assert on_cpu.decoder_embed.weight.dtype == torch.float32
    assert all(t.dtype == loaded.state_dict()[k].dtype for k, t in on_cpu.state_dict().items())
    as_stored = ck.load_model(path, dtype=torch.float16)               # asked for: kept
    assert as_stored.decoder_embed.weight.dtype == torch.float16
    assert list(tmp_path.glob("*.partial")) == [] and list(tmp_path.glob(".*")) == []


def test_save_safetensors_refuses_tensors_that_do_not_fit(golden: Path, tmp_path: Path) -> None:
    raw = golden_raw(golden, "mvd")
    config = ck.config_from_checkpoint(raw.state_dict, raw.model_string)
    with pytest.raises(CheckpointError, match="missing: mask_token"):
        ck.save_safetensors({k: v for k, v in raw.state_dict.items() if k != "mask_token"}, config,
                            tmp_path / "bad.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_without_our_metadata_or_damaged(golden: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in golden_raw(golden, "mvd").state_dict.items()}, str(plain))
    with pytest.raises(CheckpointError, match="without MV-DUSt3R settings") as err:
        ck.load_model(plain)
    assert str(plain) in err.value.message and "save_safetensors" in err.value.hint
    meta = ck._metadata(ModelConfig())
    for key, bad in (("enc_depth", "24"), ("multi_ref", 1), ("img_size", [224])):   # hand-edited metadata
        config = {**json.loads(meta["config"]), key: bad}
        edited = tmp_path / "edited.safetensors"
        save_file({"x": torch.zeros(1)}, str(edited), metadata={**meta, "config": json.dumps(config)})
        with pytest.raises(CheckpointError, match="settings in its metadata are unreadable") as err:
            ck.load_model(edited)
        assert key in err.value.message
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(plain.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="damaged safetensors"):
        ck.load_model(damaged)


def test_the_content_decides_not_the_suffix(golden: Path, tmp_path: Path, cache: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A .pth renamed .safetensors (torch.load would pick its safetensors reader by
    the name) and a .safetensors renamed .pth both load as what they are."""
    reference = ck.load_model(golden_ckpt(golden, "mvd"), cache_dir=cache).state_dict()
    renamed_pth = tmp_path / "model.safetensors"
    renamed_pth.write_bytes(golden_ckpt(golden, "mvd").read_bytes())
    with caplog.at_level(logging.WARNING, logger=ck.__name__):
        from_pth = ck.load_model(renamed_pth, cache_dir=cache).state_dict()
    assert f"{renamed_pth} is a PyTorch checkpoint (a zip written by torch.save) despite its .safetensors name" \
        in caplog.text
    renamed_safetensors = ck.save_safetensors(reference, ck.load_model(renamed_pth, cache_dir=cache).config,
                                              tmp_path / "ours.pth")
    from_safetensors = ck.load_model(renamed_safetensors).state_dict()
    for loaded in (from_pth, from_safetensors):
        assert loaded.keys() == reference.keys() and all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "model.safetensors", "ours.pth"]


def test_dtype_casts_floats_but_keeps_batchnorm_sane(golden: Path, cache: Path) -> None:
    model = ck.load_model(golden_ckpt(golden, "mvd"), dtype=torch.bfloat16, cache_dir=cache)
    state = model.state_dict()
    assert state["enc_blocks.1.mlp.fc2.weight"].dtype == torch.bfloat16
    assert state["downstream_GS_head.0.mlp_rotation.2.weight"].dtype == torch.bfloat16
    bn = [k for k in state if ".norm." in k and "skip_proj" in k]
    assert bn and all(state[k].dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32) for k in bn)
    assert bool((state["downstream_head1.skip_proj.0.norm.running_var"] > 0).all())


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_device_that_this_runtime_lacks_is_a_device_error(golden: Path, cache: Path, device: str) -> None:
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:  # a GPU machine: the weights must actually land there
        model = ck.load_model(golden_ckpt(golden, "mvd"), device=device, cache_dir=cache)
        assert all(p.device.type == device for p in model.parameters())
    else:
        with pytest.raises(DeviceError, match=device):
            ck.load_model(golden_ckpt(golden, "mvd"), device=device, cache_dir=cache)
        assert not cache.exists()   # refused before any work


def test_unknown_device_and_torch_device_objects(golden: Path, cache: Path) -> None:
    with pytest.raises(DeviceError, match="tpu"):
        ck.load_model(golden_ckpt(golden, "mvd"), device="tpu", cache_dir=cache)
    model = ck.load_model(golden_ckpt(golden, "mvd"), device=torch.device("cpu"), cache_dir=cache)
    assert model.enc_norm.weight.device.type == "cpu"


# ---------------------------------------------------------------------------------------------
# files that are not (supported) checkpoints

def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found") as err:
        ck.load_model(tmp_path / "MVDp_s2.pth")
    assert str(tmp_path / "MVDp_s2.pth") in err.value.message and "MVDp_s2.pth" in err.value.hint
    with pytest.raises(CheckpointError, match="is a folder"):
        ck.load_model(tmp_path)


@pytest.mark.parametrize("content, says", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(2000), "JPEG image"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image"),
    (b"just some notes\n", "does not start with a PyTorch (zip) or safetensors header"),
    (b"", "empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:474e\nsize 7940000000\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html>Entry not found</html>", "HTML"),
])
def test_not_a_checkpoint(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "MVD.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a checkpoint") as err:
        ck.load_model(path, cache_dir=tmp_path / "cache")
    assert says in err.value.message and str(path) in err.value.message and "MVD.pth" in err.value.hint
    assert not (tmp_path / "cache").exists()


def test_truncated_checkpoint(golden: Path, tmp_path: Path) -> None:
    path = tmp_path / "MVDp_s2.pth"
    data = golden_ckpt(golden, "mvdp").read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        ck.load_model(path, cache_dir=tmp_path / "cache")
    assert str(path) in err.value.message and "download it again" in err.value.hint
    assert not (tmp_path / "cache").exists()


def test_zip_archive_that_is_not_a_checkpoint(golden: Path, tmp_path: Path) -> None:
    path = tmp_path / "MVD.pth"
    with zipfile.ZipFile(path, "w") as archive:   # e.g. the checkpoint zipped up for sending
        archive.write(golden_ckpt(golden, "mvd"), "MVD.pth")
    with pytest.raises(CheckpointError, match=r"is a zip archive, not a PyTorch checkpoint \(it holds MVD.pth\)") as err:
        ck.load_model(path, cache_dir=tmp_path / "cache")
    assert "extract" in err.value.hint


def test_pairwise_dust3r_checkpoint_is_named(golden: Path, tmp_path: Path) -> None:
    raw = golden_raw(golden, "mvd")
    pairwise = raw.model_string.replace("AsymmetricCroCo3DStereoMultiView(", "AsymmetricCroCo3DStereo(")
    path = rewrite(golden, "mvd", tmp_path / "DUSt3R_ViTLarge_BaseDecoder_224_linear.pth", pairwise,
                   drop=("downstream_GS_head.",))
    with pytest.raises(CheckpointError, match="pair-wise DUSt3R checkpoint") as err:
        ck.load_model(path, cache_dir=tmp_path / "cache")
    assert "AsymmetricCroCo3DStereo" in err.value.message and "MVDp_s2.pth" in err.value.hint
    no_gs = rewrite(golden, "mvd", tmp_path / "no_gs.pth", drop=("downstream_GS_head.",))
    with pytest.raises(CheckpointError, match="no Gaussian head"):
        ck.load_model(no_gs, cache_dir=tmp_path / "cache")
    mast3r = rewrite(golden, "mvd", tmp_path / "mast3r.pth", raw.model_string.replace(
        "AsymmetricCroCo3DStereoMultiView(", "AsymmetricMASt3R("))
    with pytest.raises(CheckpointError, match="MASt3R checkpoint"):
        ck.load_model(mast3r, cache_dir=tmp_path / "cache")


def test_missing_unexpected_and_misshapen_keys_are_named(golden: Path, tmp_path: Path) -> None:
    raw = golden_raw(golden, "mvd")
    missing = rewrite(golden, "mvd", tmp_path / "a.pth", drop=("enc_blocks.1.attn.", "mask_token"))
    with pytest.raises(CheckpointError, match="5 missing: mask_token, enc_blocks.1.attn.qkv.weight") as err:
        ck.load_model(missing, cache_dir=tmp_path / "cache")
    assert str(tmp_path / "a.pth") in err.value.message
    extra = rewrite(golden, "mvd", tmp_path / "b.pth", add={f"prediction_head.{i}.weight": torch.zeros(2) for i in range(7)})
    with pytest.raises(CheckpointError, match=r"7 unexpected: prediction_head.0.weight, .*prediction_head.4.weight, \.\.\."):
        ck.load_model(extra, cache_dir=tmp_path / "cache")
    bad = rewrite(golden, "mvd", tmp_path / "c.pth", add={"dec_norm.weight": torch.zeros(95),
                                                        "enc_norm.bias": torch.zeros(128, dtype=torch.int64)})
    with pytest.raises(CheckpointError, match=r"wrong shape or type: enc_norm.bias \[128\].*dec_norm.weight \[95\] \(network: \[96\]\)"):
        ck.load_model(bad, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()   # nothing cached from a bad file
    with pytest.raises(CheckpointError, match="missing weight 'patch_embed.proj.weight'"):
        ck.config_from_checkpoint({k: v for k, v in raw.state_dict.items() if not k.startswith("patch_embed")},
                                  raw.model_string, source="x.pth")
    with pytest.raises(CheckpointError, match=r"'decoder_embed.weight' has shape \[96\], not 2-D"):
        ck.config_from_checkpoint({**raw.state_dict, "decoder_embed.weight": torch.zeros(96)}, raw.model_string,
                                  source="x.pth")


def test_checkpoint_without_model_or_args(golden: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.pth"
    torch.save(golden_raw(golden, "mvd").state_dict, bare)   # a plain state dict: no constructor string
    with pytest.raises(CheckpointError, match="not an MV-DUSt3R training checkpoint"):
        ck.load_model(bare, cache_dir=tmp_path / "cache")
    no_args = tmp_path / "no_args.pth"
    torch.save({"model": golden_raw(golden, "mvd").state_dict, "epoch": 3}, no_args)
    with pytest.raises(CheckpointError, match=r"no constructor string \(args.model\)"):
        ck.load_model(no_args, cache_dir=tmp_path / "cache")


class Payload:
    """Unpickling this runs ``os.system`` — the attack a weights-only load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class CustomArgs:
    """A harmless class, but not on the allow-list either."""


@pytest.mark.parametrize("kind", ["os.system", "custom class"])
def test_pickle_needing_code_outside_the_allow_list_is_refused(golden: Path, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    evil = Payload(marker) if kind == "os.system" else CustomArgs()
    path = tmp_path / "evil.pth"
    torch.save({"model": golden_raw(golden, "mvd").state_dict, "args": evil}, path)
    with pytest.raises(CheckpointError, match="refused to load") as err:
        ck.load_model(path, cache_dir=tmp_path / "cache")
    assert ("posix.system" if kind == "os.system" else "CustomArgs") in err.value.message
    assert "could run arbitrary code" in err.value.message
    assert not marker.exists(), "the pickle's payload ran"
    assert not (tmp_path / "cache").exists()


def test_allow_list_is_exactly_argparse_namespace(golden: Path) -> None:
    assert ck.ALLOWED_GLOBALS == (argparse.Namespace,)
    raw = golden_raw(golden, "mvdp")   # the official files need it and nothing more
    assert raw.model_string.startswith("AsymmetricCroCo3DStereoMultiView(") and len(raw.state_dict) == 257


# ---------------------------------------------------------------------------------------------
# memory: a released-style file with a large optimizer state

MID_CONFIG = ModelConfig(enc_embed_dim=384, enc_depth=6, enc_num_heads=6, dec_embed_dim=256, dec_depth=4,
                         dec_num_heads=4, skip_dim=32, gs_mlp_dim=192, multi_ref=True, n_ref=4)
# Peak RSS growth allowed while loading: weights × PEAK_FACTOR + PEAK_SLACK. Writing the cache pages the
# weights in once (file-backed, reclaimable); reading the AdamW moments (2× the weights) would blow it.
# The child builds a tiny network on the meta device before measuring: torch allocates ~75 MB the
# first time anything is built there, a fixed cost that would otherwise swamp the slack.
PEAK_FACTOR = 1.15
PEAK_SLACK = 32 << 20

CHILD = textwrap.dedent("""
    import gc, json, sys, time
    import torch
    torch.set_num_threads(1)
    from mvdust3r_blender.engine.checkpoint import load_model, read_checkpoint
    from mvdust3r_blender.engine.config import ModelConfig
    from mvdust3r_blender.engine.model import build_model
    path, cache = sys.argv[1], sys.argv[2]

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    def mapped(file):  # resident bytes of this process's mappings of `file`
        total, inside = 0, False
        for line in open("/proc/self/smaps"):
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(file)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
        return total

    def reset_peak():
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmHWM")

    with torch.device("meta"):
        build_model(ModelConfig(enc_embed_dim=64, enc_depth=1, enc_num_heads=1, dec_embed_dim=64, dec_depth=1,
                                dec_num_heads=1, skip_dim=4, gs_mlp_dim=4))
    out = {}
    raw = read_checkpoint(path)
    out["mapped_after_read"] = mapped(path)
    out["weights_touched"] = sum(t.nbytes for t in raw.state_dict.values() if t.sum() is not None)
    out["mapped_after_touching_weights"] = mapped(path)
    del raw
    for run in ("first", "cached"):
        base = reset_peak()
        start = time.perf_counter()
        model = load_model(path, cache_dir=cache)
        out[run] = {"growth": status("VmHWM") - base, "seconds": time.perf_counter() - start,
                    "params": sum(p.numel() for p in model.parameters())}
        del model
    print(json.dumps(out))
""")


def test_loading_a_released_style_file_never_reads_the_optimizer_state(tmp_path: Path) -> None:
    state = random_state_dict(MID_CONFIG)
    weights = sum(t.nbytes for t in state.values())
    path = write_training_checkpoint(tmp_path / "MVDp_mid.pth", state, format_model_string(MID_CONFIG))
    del state
    assert 100e6 < weights < 200e6 and path.stat().st_size > 2.9 * weights   # weights + 2× in AdamW moments
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "cache")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # The reading layer maps the file without reading it; touching every weight maps the weights and
    # (but for the kernel's fault-around of neighbouring pages) nothing of the optimizer state.
    assert got["weights_touched"] == weights
    assert got["mapped_after_read"] < 0.02 * weights, got
    assert weights <= got["mapped_after_touching_weights"] < 1.1 * weights + (16 << 20), got
    # The whole load, pickle -> cache -> network, stays near the weights; the cached load maps the weights
    # without reading them into the process (its checksum pass reads the file, not the mapping).
    assert got["first"]["growth"] < PEAK_FACTOR * weights + PEAK_SLACK, got
    assert got["cached"]["growth"] < 0.25 * weights + PEAK_SLACK, got
    assert got["first"]["params"] == got["cached"]["params"] > 25_000_000
    assert ck.cache_path(path, tmp_path / "cache").is_file()


# ---------------------------------------------------------------------------------------------
# the registry

def test_registry_lists_the_release_honestly() -> None:
    names = [entry.filename for entry in registry.RELEASED]
    assert names == ["MVDp_s2.pth", "MVD.pth", "MVDp_s1.pth"]
    default = registry.default_checkpoint()
    assert default.filename == "MVDp_s2.pth" and sum(e.default for e in registry.RELEASED) == 1
    assert default.hf_path == "checkpoints/MVDp_s2.pth"
    assert default.url == "https://huggingface.co/Zhenggang/MV-DUSt3R/resolve/main/checkpoints/MVDp_s2.pth"
    assert {e.licence for e in registry.RELEASED} == {"CC BY-NC 4.0"}
    s1 = registry.find_released("/some/where/MVDp_s1.pth")
    assert s1 is not None and s1.download_size_text == "7.94 GB" and s1.variant == "MVDp"
    assert registry.find_released("MVD.pth").download_size_text == "size unknown"  # type: ignore[union-attr]
    # a download is checked against download_bytes to the byte: a rounded "7.94 GB" must not be there
    assert all(entry.download_bytes is None for entry in registry.RELEASED)
    assert registry.find_released("other.pth") is None
    # weights sizes agree with the network built for the released configs
    for entry in registry.RELEASED:
        config = ModelConfig.released_mvdp() if entry.variant == "MVDp" else ModelConfig.released_mvd()
        with torch.device("meta"):
            assert entry.weights_bytes == sum(t.nbytes for t in build_model(config).state_dict().values())
    with pytest.raises(AttributeError):
        default.default = False  # type: ignore[misc]
