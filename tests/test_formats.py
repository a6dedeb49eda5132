"""On-disk formats (cmp_jax.data.formats): .flo, JPEG flow, images, list files, TFRecords."""

import os

import numpy as np
import pytest

from cmp_jax.data import formats as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample")
Q = 100.0 / 255.0  # one JPEG-flow quantum, 0.392 px


def _smooth_flow(h=96, w=128):
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  u = 8.0 * np.sin(x / 23.0) + 0.05 * y - 3.0
  v = -5.0 + 6.0 * np.cos(y / 17.0) + 0.02 * x
  return np.stack([u, v], -1).astype(np.float32)


# ----------------------------------------------------------------------------
# .flo

def test_flo_round_trip_is_exact(tmp_path):
  flow = np.random.RandomState(0).randn(7, 11, 2).astype(np.float32) * 20
  F.write_flo(tmp_path / "a.flo", flow)
  back = F.read_flo(tmp_path / "a.flo")
  assert back.dtype == np.float32 and back.shape == (7, 11, 2)
  np.testing.assert_array_equal(back, flow)
  raw = (tmp_path / "a.flo").read_bytes()
  assert raw[:4] == np.float32(202021.25).tobytes() and len(raw) == 12 + 7 * 11 * 2 * 4
  assert np.frombuffer(raw[4:12], "<i4").tolist() == [11, 7]  # width then height
  # u, v interleaved per pixel, row-major
  assert np.frombuffer(raw[12:20], "<f4").tolist() == flow[0, 0].tolist()


def test_flo_bad_magic_truncation_and_missing_name_the_file(tmp_path):
  p = tmp_path / "bad.flo"
  assert np.float32(202021.25).tobytes() == b"PIEH"  # the Middlebury tag
  p.write_bytes(b"HEIP" + b"\0" * 20)
  with pytest.raises(F.DataError, match=r"bad\.flo: not a \.flo file \(magic"):
    F.read_flo(p)
  good = F.encode_flo(np.zeros((4, 5, 2), np.float32))
  (tmp_path / "short.flo").write_bytes(good[:-8])
  with pytest.raises(F.DataError, match=r"short\.flo: truncated"):
    F.read_flo(tmp_path / "short.flo")
  with pytest.raises(F.DataError, match=r"not found: .*nothere\.flo"):
    F.read_flo(tmp_path / "nothere.flo")


# ----------------------------------------------------------------------------
# JPEG flow

def test_appendix_b_jpeg_levels():
  p = np.array([[0, 127, 128, 255]], np.uint8)
  f = F.decode_jpg_flow(p, p)
  assert f.dtype == np.float32 and f.shape == (1, 4, 2)
  # computed in float32 in the original's order: float32(p) / 255 * 100 - 50
  expect = np.array([0, 127, 128, 255], np.float32) / 255 * 100 - 50
  np.testing.assert_array_equal(f[0, :, 0], expect)
  np.testing.assert_allclose(f[0, :, 0], [-50.0, -0.196, 0.196, 50.0], atol=1e-3)
  assert not (f == 0).any()  # no exact zero
  # DiscreteLoss bins (nbins 99, fmax 50): clamp to +-(50 - 1e-3), floor((f + 50) / (100 / 99))
  bins = np.floor((np.clip(f[0, :, 0], -49.999, 49.999) + 50) / (100 / 99)).astype(int)
  assert bins.tolist() == [0, 49, 49, 98]


def test_encode_decode_without_jpeg_is_within_half_a_quantum():
  flow = _smooth_flow()
  px, py = F.encode_jpg_flow(flow)
  assert px.dtype == np.uint8 and px.shape == flow.shape[:2]
  back = F.decode_jpg_flow(px, py)
  assert np.abs(back - flow).max() <= Q / 2 + 1e-5
  # the levels are round((f + 50) / 100 * 255)
  assert px[0, 0] == int(np.rint((flow[0, 0, 0] + 50) / 100 * 255))


def test_encode_clips_to_plus_minus_50():
  flow = np.array([[[-80.0, 70.0], [50.0, -50.0]]], np.float32)
  px, py = F.encode_jpg_flow(flow)
  assert px.tolist() == [[0, 255]] and py.tolist() == [[255, 0]]


def test_jpeg_round_trip_is_within_one_quantum(tmp_path):
  flow = _smooth_flow()
  px, py = F.encode_jpg_flow(flow)
  (tmp_path / "x.jpg").write_bytes(F.encode_jpeg(px, 100))
  (tmp_path / "y.jpg").write_bytes(F.encode_jpeg(py, 100))
  back = F.read_jpg_flow(tmp_path / "x.jpg", tmp_path / "y.jpg")
  # JPEG at quality 100 changes a smooth plane by at most one level: within one quantum of the quantised flow.
  quantised = F.decode_jpg_flow(px, py)
  assert np.abs(back - quantised).max() <= Q + 1e-5
  assert np.abs(back - flow).mean() < Q / 2


def test_flow_plane_size_mismatch_names_both_files(tmp_path):
  (tmp_path / "x.jpg").write_bytes(F.encode_jpeg(np.zeros((8, 8), np.uint8)))
  (tmp_path / "y.jpg").write_bytes(F.encode_jpeg(np.zeros((8, 9), np.uint8)))
  with pytest.raises(F.DataError, match=r"x\.jpg is 8x8.*y\.jpg is 9x8"):
    F.read_jpg_flow(tmp_path / "x.jpg", tmp_path / "y.jpg")


# ----------------------------------------------------------------------------
# Images

def test_read_image_is_rgb_and_errors_name_the_file(tmp_path):
  img = np.zeros((6, 10, 3), np.uint8)
  img[..., 0] = 250  # red
  (tmp_path / "a.png").write_bytes(_png(img))
  got = F.read_image(tmp_path / "a.png")
  assert got.shape == (6, 10, 3) and got.dtype == np.uint8 and (got[..., 0] == 250).all() and not got[..., 2].any()
  # a grey JPEG is converted to RGB, as PIL .convert('RGB')
  (tmp_path / "g.jpg").write_bytes(F.encode_jpeg(np.full((4, 4), 100, np.uint8)))
  assert F.read_image(tmp_path / "g.jpg").shape == (4, 4, 3)
  with pytest.raises(F.DataError, match=r"image not found: .*missing\.jpg"):
    F.read_image(tmp_path / "missing.jpg")
  (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
  with pytest.raises(F.DataError, match=r"cannot decode image .*junk\.jpg"):
    F.read_image(tmp_path / "junk.jpg")
  data = F.encode_jpeg(np.random.RandomState(0).randint(0, 255, (64, 64, 3)).astype(np.uint8), 95)
  (tmp_path / "trunc.jpg").write_bytes(data[:len(data) // 2])
  with pytest.raises(F.DataError, match=r"trunc\.jpg"):
    F.read_image(tmp_path / "trunc.jpg")


def _png(rgb):
  import io
  from PIL import Image
  b = io.BytesIO()
  Image.fromarray(rgb).save(b, format="PNG")
  return b.getvalue()


# ----------------------------------------------------------------------------
# List files

def test_read_list_files_jpg_and_flo(tmp_path):
  (tmp_path / "a.txt").write_text("f/1.jpg f/2.jpg fl/1_x.jpg fl/1_y.jpg\n\n# comment\nf/2.jpg f/3.jpg fl/2_x.jpg fl/2_y.jpg\n")
  (tmp_path / "b.txt").write_text("f/9.jpg\tf/10.jpg   fl/9_x.jpg fl/9_y.jpg")
  es = F.read_list_files([tmp_path / "a.txt", tmp_path / "b.txt"], "/data/root", "jpg")
  assert len(es) == 3  # lines concatenated in order
  assert es[0].img1 == "/data/root/f/1.jpg" and es[0].flow == ("/data/root/fl/1_x.jpg", "/data/root/fl/1_y.jpg")
  assert es[2].img2 == "/data/root/f/10.jpg" and es[2].where.endswith("b.txt:1")
  assert es[1].where.endswith("a.txt:4")
  assert es.fields(2) == ["f/9.jpg", "f/10.jpg", "fl/9_x.jpg", "fl/9_y.jpg"]  # as written, tabs and runs of spaces gone
  assert es.where(2) == es[2].where and es[-1] == es[2] and es[1:] == [es[1], es[2]]
  (tmp_path / "c.txt").write_text("a.jpg b.jpg ab.flo\n")
  (e,) = F.read_list_files(str(tmp_path / "c.txt"), "", "flo")
  assert e.flow == ("ab.flo",) and e.img1 == "a.jpg"


def test_list_errors_name_file_and_line(tmp_path):
  (tmp_path / "l.txt").write_text("a b c d\na b c\n")
  with pytest.raises(F.DataError, match=r"l\.txt:2: expected 4 columns \(img1 img2 flowx flowy\).*got 3"):
    F.read_list_files(tmp_path / "l.txt", "", "jpg")
  with pytest.raises(F.DataError, match=r"l\.txt:1: expected 3 columns"):
    F.read_list_files(tmp_path / "l.txt", "", "flo")
  es = F.read_list_files(tmp_path / "l.txt", "", "jpg", skip_malformed=True)
  assert len(es) == 1 and es.malformed_lines == 1
  (tmp_path / "empty.txt").write_text("\n  \n")
  with pytest.raises(F.DataError, match=r"list file .*empty\.txt holds no samples"):
    F.read_list_files([tmp_path / "l.txt", tmp_path / "empty.txt"][1:], "", "jpg")
  with pytest.raises(F.DataError, match=r"list file not found: .*nope\.txt"):
    F.read_list_files(tmp_path / "nope.txt", "", "jpg")
  with pytest.raises(F.DataError, match="no list files"):
    F.read_list_files([], "", "jpg")


def test_list_lines_round_trip(tmp_path):
  lines = [F.format_list_line("f/1.jpg", "f/2.jpg", ["x.jpg", "y.jpg"])]
  F.write_list_file(tmp_path / "lists" / "t.txt", lines)
  (e,) = F.read_list_files(tmp_path / "lists" / "t.txt", "R", "jpg")
  assert e == F.ListEntry("R/f/1.jpg", "R/f/2.jpg", ("R/x.jpg", "R/y.jpg"), e.where)
  with pytest.raises(ValueError, match="whitespace"):
    F.format_list_line("a b.jpg", "c.jpg", ["d.flo"])


def test_read_sample_checks_image_and_flow_sizes(tmp_path):
  (tmp_path / "1.jpg").write_bytes(F.encode_jpeg(np.zeros((8, 12, 3), np.uint8)))
  (tmp_path / "2.jpg").write_bytes(F.encode_jpeg(np.zeros((8, 12, 3), np.uint8)))
  F.write_flo(tmp_path / "f.flo", np.ones((8, 12, 2), np.float32))
  F.write_flo(tmp_path / "g.flo", np.ones((8, 10, 2), np.float32))
  (tmp_path / "l.txt").write_text("1.jpg 2.jpg f.flo\n1.jpg 2.jpg g.flo\n")
  ok, bad = F.read_list_files(tmp_path / "l.txt", str(tmp_path), "flo")
  img1, img2, flow = F.read_sample(ok, "flo")
  assert img1.shape == (8, 12, 3) and flow.shape == (8, 12, 2) and (flow == 1).all()
  with pytest.raises(F.DataError, match=r"l\.txt:2: image .*1\.jpg is 12x8 but its flow .*g\.flo is 10x8"):
    F.read_sample(bad, "flo")


def test_shipped_sample_lists_read():
  es = F.read_list_files([os.path.join(SAMPLE, "lists", "train.txt")], SAMPLE, "jpg")
  assert len(es) >= 60
  img1, img2, flow = F.read_sample(es[0])
  assert img1.shape[:2] == flow.shape[:2] and min(flow.shape[:2]) >= 160
  assert np.abs(flow).max() > 1.0  # real motion


# ----------------------------------------------------------------------------
# TFRecords

def test_tfrecord_example_round_trips_like_the_files(tmp_path):
  pytest.importorskip("tensorflow")
  rs = np.random.RandomState(0)
  img = (rs.rand(40, 56, 3) * 255).astype(np.uint8)
  jpg = F.encode_jpeg(img, 90)
  flow = _smooth_flow(40, 56)
  px, py = F.encode_jpg_flow(flow)
  bx, by = F.encode_jpeg(px, 100), F.encode_jpeg(py, 100)
  (tmp_path / "x.jpg").write_bytes(bx)
  (tmp_path / "y.jpg").write_bytes(by)
  s = F.make_tfrecord_example(jpg, jpg, 40, 56, "frames/v/000001.jpg", "jpg", flow_x=bx, flow_y=by)
  ex = F.parse_tfrecord_example(s, "r.tfrecord#3")
  assert ex.flow == (bx, by) and ex.img1 == jpg and (ex.height, ex.width) == (40, 56)
  assert ex.key == "frames/v/000001.jpg" and ex.name == "r.tfrecord#3 (frames/v/000001.jpg)"
  i1, i2, fl, key = F.decode_tfrecord_example(s)
  np.testing.assert_array_equal(i1, F.decode_image(jpg))
  np.testing.assert_array_equal(i2, i1)
  np.testing.assert_array_equal(fl, F.read_jpg_flow(tmp_path / "x.jpg", tmp_path / "y.jpg"))
  assert key == "frames/v/000001.jpg"
  for enc, tol in (("float16", 0.02), ("float32", 0.0)):
    dt = "<f2" if enc == "float16" else "<f4"
    s = F.make_tfrecord_example(jpg, jpg, 40, 56, "k", enc, flow_raw=flow.astype(dt).tobytes())
    got = F.decode_tfrecord_example(s)[2]
    assert got.shape == (40, 56, 2) and got.dtype == np.float32 and np.abs(got - flow).max() <= tol


def test_tfrecord_problems_name_the_record():
  tf = pytest.importorskip("tensorflow")
  jpg = F.encode_jpeg(np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(F.BadFileError, match=r"^r#0: record is not a tf.train.Example"):
    F.parse_tfrecord_example(b"\xff" * 9, "r#0")
  s = F.make_tfrecord_example(jpg, jpg, 4, 4, "k", "float32", flow_raw=b"\0" * 12)
  with pytest.raises(F.BadFileError, match=r"r#1 \(k\):flow_raw: flow_raw holds 12 bytes, 4x4x2 float32 needs 128"):
    F.decode_tfrecord_example(s, "r#1")
  s = F.make_tfrecord_example(jpg, b"", 4, 4, "k", "jpg", flow_x=jpg, flow_y=jpg)
  with pytest.raises(F.BadFileError, match=r"r#2 \(k\): record has no 'img2' feature"):
    F.parse_tfrecord_example(s, "r#2")
  # the writer writes exactly the documented features
  feats = tf.train.Example.FromString(s).features.feature
  assert set(feats) == set(F.TFRECORD_FEATURES)
  with pytest.raises(ValueError, match="flow_encoding"):
    F.make_tfrecord_example(b"", b"", 1, 1, "k", "png")
