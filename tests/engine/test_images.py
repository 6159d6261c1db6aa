"""Photo loading and preprocessing: official parity, formats, geometry of the crop, bad files."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mvdust3r_blender.engine.errors import InputError
from mvdust3r_blender.engine import images
from mvdust3r_blender.engine.errors import Cancelled
from mvdust3r_blender.engine.images import (collect_photo_paths, load_photo, load_photos, network_input,
                                            plan_resize, start_loading)
from tests.helpers.photos import flat_photos


def _gradient(width, height):
    """R = x/W·255, G = y/H·255 sampled at pixel centres: colour tells where in the photo a pixel is."""
    x = (np.arange(width) + 0.5) / width * 255
    y = (np.arange(height) + 0.5) / height * 255
    img = np.zeros((height, width, 3), dtype=np.float64)
    img[..., 0], img[..., 1], img[..., 2] = x[None, :], y[:, None], 100
    return Image.fromarray(np.rint(img).astype(np.uint8))


def test_matches_the_official_load_images_exactly(golden):
    g = np.load(golden / "preprocess_load_images_224.npz")
    photos = load_photos([golden / "pre_landscape_320x240.png", golden / "pre_portrait_150x200.png"], (224, 224))
    for i, photo in enumerate(photos):
        assert photo.image.shape == (224, 224, 3)
        np.testing.assert_array_equal(network_input(photo.image[None]).numpy(), g[f"img{i}.img"])
    # 320x240 → 299x224 (LANCZOS), crop x 37..261; 150x200 → 224x299 (BICUBIC), crop y 37..261
    assert photos[0].photo_size == (320, 240) and photos[1].photo_size == (150, 200)
    np.testing.assert_allclose(photos[0].crop_box, (37 * 320 / 299, 0, 261 * 320 / 299, 240))
    np.testing.assert_allclose(photos[1].crop_box, (0, 37 * 200 / 299, 150, 261 * 200 / 299))


def test_resize_plan_follows_the_official_rule_and_generalises():
    p = plan_resize(320, 240, (224, 224))
    assert p.resized == (299, 224) and p.resample == Image.Resampling.LANCZOS and p.crop == (37, 0, 261, 224)
    p = plan_resize(150, 200, (224, 224))
    assert p.resized == (224, 299) and p.resample == Image.Resampling.BICUBIC
    for width, height in [(4000, 3000), (3024, 4032), (1001, 999), (97, 61), (64, 64), (8160, 6120)]:
        for s in (32, 64, 224, 512):
            p = plan_resize(width, height, (s, s))
            assert min(p.resized) == s and p.crop[2] - p.crop[0] == s and p.crop[3] - p.crop[1] == s
            assert p.crop[0] >= 0 and p.crop[2] <= p.resized[0] and p.crop[3] <= p.resized[1]
    p = plan_resize(400, 400, (32, 48))  # non-square model resolution: cover, then centre crop h×w
    assert p.resized == (48, 48) and p.crop == (0, 8, 48, 40)


@pytest.mark.parametrize("size", [(301, 203), (203, 301), (97, 61), (64, 64), (33, 200)])
def test_crop_box_locates_the_grid_in_the_original_photo(tmp_path, size):
    """Sampling the photo's coordinate gradient at x0+(j+0.5)(x1−x0)/w gives the crop's colours."""
    path = tmp_path / "g.png"
    _gradient(*size).save(path)
    photo = load_photo(path, (32, 32))
    x0, y0, x1, y1 = photo.crop_box
    j = np.arange(32)
    expect_r = (x0 + (j + 0.5) * (x1 - x0) / 32) / size[0] * 255
    expect_g = (y0 + (j + 0.5) * (y1 - y0) / 32) / size[1] * 255
    # interior rows/columns (filter edges clamp); tolerance: colour quantisation + resampling
    np.testing.assert_allclose(photo.image[16, 2:-2, 0], expect_r[2:-2], atol=2.0)
    np.testing.assert_allclose(photo.image[2:-2, 16, 1], expect_g[2:-2], atol=2.0)
    assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]


def test_exif_orientation_is_applied_before_everything(tmp_path):
    base = _gradient(120, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated = tmp_path / "rotated.png"
    base.save(rotated, exif=exif)
    upright = tmp_path / "upright.png"
    base.transpose(Image.Transpose.ROTATE_270).save(upright)
    a, b = load_photo(rotated, (32, 32)), load_photo(upright, (32, 32))
    assert a.photo_size == (80, 120) == b.photo_size
    np.testing.assert_array_equal(a.image, b.image)
    assert a.crop_box == b.crop_box


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_every_supported_format_and_mode_loads(tmp_path):
    rgb = _gradient(90, 60)
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    grey16 = Image.fromarray(np.full((60, 90), 40000, dtype=np.uint16))
    files = [
        _save(rgb, tmp_path / "a.jpg", quality=95),
        _save(rgb, tmp_path / "b.png"),
        _save(rgb.convert("RGBA"), tmp_path / "c_alpha.png"),
        _save(pal, tmp_path / "d_palette.png", transparency=0),
        _save(grey16, tmp_path / "e_grey16.png"),
        _save(rgb.convert("L"), tmp_path / "f_grey.png"),
        _save(rgb, tmp_path / "g.webp", lossless=True),
        _save(rgb, tmp_path / "h.tiff"),
        _save(rgb, tmp_path / "i.bmp"),
        _save(rgb.convert("CMYK"), tmp_path / "j_cmyk.jpg"),
    ]
    rgb16 = (np.asarray(rgb).astype(np.uint16) * 257)[..., ::-1]  # 16 bits per channel, BGR for OpenCV
    assert cv2.imwrite(str(tmp_path / "k_rgb16.png"), np.ascontiguousarray(rgb16))
    files.append(tmp_path / "k_rgb16.png")
    photos = load_photos(files, (32, 32))
    assert [p.image.shape for p in photos] == [(32, 32, 3)] * len(files)
    np.testing.assert_array_equal(photos[10].image, photos[1].image)  # 16-bit RGB keeps its 8 high bits
    assert all(p.photo_size == (90, 60) for p in photos)
    lossless = photos[1].image.astype(int)
    for k in (2, 6, 7, 8):  # alpha dropped, lossless formats identical to the PNG
        np.testing.assert_array_equal(photos[k].image, lossless)
    assert abs(photos[0].image.astype(int) - lossless).max() < 12  # JPEG
    # 16-bit grey keeps its range (40000/65535 ≈ 156), not clipped to white as convert('RGB') would
    assert np.all(np.abs(photos[4].image.astype(int) - 156) <= 1)
    assert photos[5].image.std(axis=-1).max() == 0  # grey stays grey


def test_photos_of_different_sizes_share_the_grid(tmp_path):
    files = [_save(_gradient(w, h), tmp_path / f"p{w}x{h}.png") for w, h in [(400, 300), (90, 160), (50, 50)]]
    photos = load_photos(files, (48, 48))
    assert {p.image.shape for p in photos} == {(48, 48, 3)}
    assert [p.photo_size for p in photos] == [(400, 300), (90, 160), (50, 50)]


def test_paths_with_spaces_and_non_ascii_work(tmp_path):
    folder = tmp_path / "mes photos – été 写真"
    folder.mkdir()
    path = _save(_gradient(40, 30), folder / "vue n°1 ü.png")
    (photo,) = load_photos([path], (16, 16))
    assert photo.path == str(path) and photo.image.shape == (16, 16, 3)


def test_every_unreadable_file_is_named_in_one_error(tmp_path):
    good = _save(_gradient(40, 30), tmp_path / "good.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    buf = io.BytesIO()
    _gradient(200, 150).save(buf, "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    missing = tmp_path / "missing.png"
    with pytest.raises(InputError) as info:
        load_photos([good, empty, text, truncated, missing, tmp_path], (16, 16))
    message = str(info.value)
    assert "5 of 6 photos cannot be read" in message
    for bad, why in [(empty, "empty file"), (text, "not an image"), (truncated, "corrupt"),
                     (missing, "no such file"), (tmp_path, "is a folder")]:
        assert f"{bad}: {why}" in message
    assert "good.png" not in message


def test_duplicate_paths_are_refused(tmp_path):
    a = _save(_gradient(40, 30), tmp_path / "a.png")
    with pytest.raises(InputError, match="more than once: .*a.png"):
        load_photos([a, tmp_path / "." / "a.png"], (16, 16))


def test_huge_jpeg_is_decoded_at_reduced_scale_close_to_the_exact_result(tmp_path):
    path = _save(_gradient(1600, 1200), tmp_path / "big.jpg", quality=95)
    exact = load_photo(path, (32, 32))
    assert not exact.approximate
    draft = load_photo(path, (32, 32), max_exact_pixels=1_000_000)  # pretend 1 MP is "huge"
    assert draft.approximate and draft.photo_size == (1600, 1200)
    np.testing.assert_allclose(draft.crop_box, exact.crop_box, atol=8.0)  # ≤ one draft pixel (8 photo px)
    assert np.abs(draft.image.astype(int) - exact.image.astype(int)).mean() < 2.0


def test_network_input_is_normalised_to_minus_one_one():
    images = np.array([[[[0, 255, 128]]]], dtype=np.uint8)
    x = network_input(images)
    assert x.shape == (1, 3, 1, 1) and x.dtype == torch.float32
    np.testing.assert_allclose(x.flatten().numpy(), [-1.0, 1.0, 128 / 255 * 2 - 1], atol=1e-7)


def test_folders_expand_to_their_sorted_image_files(tmp_path):
    for name in ["b.JPG", "a.png", "c.txt", "d.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    other = tmp_path / "elsewhere.tif"
    assert collect_photo_paths([tmp_path, other]) == [tmp_path / "a.png", tmp_path / "b.JPG", tmp_path / "d.webp", other]


def test_huge_rotated_jpeg_keeps_orientation_and_geometry(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(_gradient(1600, 1200), tmp_path / "big_rotated.jpg", quality=95, exif=exif)
    exact = load_photo(path, (32, 32))
    draft = load_photo(path, (32, 32), max_exact_pixels=1_000_000)
    assert draft.approximate and draft.photo_size == exact.photo_size == (1200, 1600)
    np.testing.assert_allclose(draft.crop_box, exact.crop_box, atol=8.0)
    assert np.abs(draft.image.astype(int) - exact.image.astype(int)).mean() < 2.0


def test_photos_come_back_in_order_from_the_decoder_threads(tmp_path):
    """Many photos of different sizes decode on several threads; the results keep the given order."""
    paths = flat_photos(tmp_path, [(40 + 13 * k, 30 + 7 * k) for k in range(12)],
                        [(10 * k, 0, 255 - 10 * k) for k in range(12)], name="{:02d}.png")
    photos = load_photos(paths, (16, 16))
    assert [p.path for p in photos] == [str(p) for p in paths]
    assert [int(p.image[0, 0, 0]) for p in photos] == [10 * k for k in range(12)]
    assert images.DECODE_THREADS >= 1


def test_photos_decoded_ahead_are_collected_not_decoded_again(tmp_path, monkeypatch):
    """The worker starts decoding while the model loads (``start_loading``); ``load_photos`` then
    takes those results, and decodes afresh only when they are for another size or other photos."""
    paths = [tmp_path / f"{k}.png" for k in range(3)]
    for k, path in enumerate(paths):
        _gradient(64 + 8 * k, 48).save(path)
    pending = start_loading(paths, (32, 32))
    for job in pending.jobs:
        job.result(timeout=30)
    expected = load_photos(paths, (32, 32))

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "_load_or_reason", no_decoding)
    ahead = load_photos(paths, (32, 32), pending=pending)
    assert [p.crop_box for p in ahead] == [p.crop_box for p in expected]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(ahead, expected))
    with pytest.raises(AssertionError, match="decoded again"):
        load_photos(paths, (16, 16), pending=start_loading(paths, (32, 32)))   # another size


def test_a_cancel_stops_the_photo_stage(tmp_path):
    import threading
    paths = [tmp_path / f"{k}.png" for k in range(3)]
    for path in paths:
        _gradient(64, 48).save(path)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        load_photos(paths, (32, 32), cancel=cancel)


def _exif_jpeg(path, size, model, focal_mm, orientation=1, focal_35mm=None):
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Maker", model, orientation
    exif.get_ifd(0x8769)[0x920A] = IFDRational(focal_mm)
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm
    Image.new("RGB", size, (90, 60, 30)).save(path, exif=exif)
    return path


def test_photos_of_one_camera_share_a_camera_key(tmp_path):
    """Same EXIF make/model/focal/full-resolution size: one camera, even when EXIF turns one photo portrait;
    another model, another focal or another size: another camera; without EXIF the displayed size decides."""
    a = load_photo(_exif_jpeg(tmp_path / "a.jpg", (64, 48), "M1", 4.2, focal_35mm=26), (32, 32))
    turned = load_photo(_exif_jpeg(tmp_path / "b.jpg", (64, 48), "M1", 4.2, orientation=6, focal_35mm=26), (32, 32))
    assert turned.photo_size == (48, 64) and a.camera_key == turned.camera_key
    assert a.camera is not None and (a.camera.make, a.camera.model, a.camera.focal_mm, a.camera.focal_35mm,
                                     a.camera.stored_size) == ("Maker", "M1", 4.2, 26.0, (64, 48))
    for other in (_exif_jpeg(tmp_path / "c.jpg", (64, 48), "M2", 4.2, focal_35mm=26),
                  _exif_jpeg(tmp_path / "d.jpg", (64, 48), "M1", 6.0, focal_35mm=26),
                  _exif_jpeg(tmp_path / "e.jpg", (32, 24), "M1", 4.2, focal_35mm=26)):
        assert load_photo(other, (32, 32)).camera_key != a.camera_key
    Image.new("RGB", (64, 48)).save(tmp_path / "p.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "q.png")
    Image.new("RGB", (48, 64)).save(tmp_path / "r.png")
    p, q, r = (load_photo(tmp_path / f"{k}.png", (32, 32)) for k in "pqr")
    assert p.camera is not None and not p.camera.has_exif
    assert p.camera_key == q.camera_key != r.camera_key and p.camera_key != a.camera_key
