"""Dataset maker (cmp_jax.data.prepare) on tiny synthetic videos with known motion, and the shipped sample."""

import json
import os

import cv2
import numpy as np
import pytest

from cmp_jax.data import formats as F
from cmp_jax.data import prepare as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample")

H, W = 96, 128
SQ, TOP, LEFT = 36, 20, 16       # square side and start
DX, DY = 3, 2                    # square motion per frame (u, v)
CUT_AT = 6                       # frames >= CUT_AT show another scene


def _texture(seed, h, w, tint):
  rs = np.random.RandomState(seed)
  base = cv2.resize(rs.rand(h // 4, w // 4).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
  base = (base - base.min()) / (base.max() - base.min() + 1e-6)
  return np.clip(base[..., None] * np.array(tint, np.float32) + 20, 0, 255).astype(np.uint8)


def _frames(n=10, cut=True):
  """RGB frames: a textured square moving (DX, DY) px a frame over a static textured background.

  From CUT_AT on (if `cut`), a different scene (another texture and colour) with the same square motion.
  """
  square = _texture(1, SQ, SQ, (40, 60, 230))
  out = []
  for t in range(n):
    scene_b = cut and t >= CUT_AT
    bg = _texture(7 if scene_b else 3, H, W, (230, 40, 40) if scene_b else (40, 200, 60))
    f = bg.copy()
    y, x = TOP + DY * t, LEFT + DX * t
    f[y:y + SQ, x:x + SQ] = square
    out.append(f)
  return out


def _write_video(path, frames):
  w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
  assert w.isOpened()
  for f in frames:
    w.write(f[:, :, ::-1].copy())
  w.release()


def _options(videos, out, **kw):
  base = dict(workers=1, min_motion=1.0, motion_percentile=90, progress_every=1000)
  base.update(kw)
  return P.PrepareOptions(videos=tuple(videos), out=out, **base)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """Two synthetic videos (one with a scene cut) -> dataset with records, using 2 worker processes."""
  d = tmp_path_factory.mktemp("prep")
  _write_video(d / "clip_a.avi", _frames(10, cut=True))
  _write_video(d / "clip_b.avi", _frames(8, cut=False))
  out = d / "ds"
  summary = P.prepare(_options([d / "clip_a.avi", d / "clip_b.avi"], out, workers=2, val_videos=("clip_b",),
                               examples_per_shard=4))
  return out, summary


def test_layout_and_lists(made):
  out, summary = made
  train = (out / "lists" / "train.txt").read_text().splitlines()
  val = (out / "lists" / "val.txt").read_text().splitlines()
  assert train and val
  for line in train + val:
    cols = line.split()
    assert len(cols) == 4
    assert not any(os.path.isabs(c) for c in cols)
    assert all((out / c).is_file() for c in cols)
  # pairs (t, t+1) of clip_a in train, clip_b in val (split by video)
  assert train[0].split() == ["frames/clip_a/000000.jpg", "frames/clip_a/000001.jpg",
                              "flows/clip_a/000000_000001_x.jpg", "flows/clip_a/000000_000001_y.jpg"]
  assert all("clip_a" in l for l in train) and all("clip_b" in l for l in val)
  assert len(val) == 7 and summary["num_val"] == 7
  es = F.read_list_files(out / "lists" / "train.txt", str(out), "jpg")
  img1, img2, flow = F.read_sample(es[0])
  assert img1.shape == (H, W, 3) and flow.shape == (H, W, 2)
  meta = json.loads((out / "prepare.json").read_text())
  assert meta["videos"]["clip_a"]["candidate_pairs"] == 9 and meta["val_videos"] == ["clip_b"]
  # no temporary or staging files anywhere
  for dirpath, dirnames, files in os.walk(out):
    assert not [f for f in files if f.endswith(".tmp")], dirpath
    assert ".staging" not in dirnames


def test_scene_cut_pair_is_skipped(made):
  out, summary = made
  train = (out / "lists" / "train.txt").read_text()
  assert f"{CUT_AT - 1:06d}_{CUT_AT:06d}" not in train
  assert summary["videos"]["clip_a"]["cut"] == 1
  assert summary["videos"]["clip_a"]["kept"] == 8  # the 9 pairs less the cut


def test_flow_matches_the_known_translation(made):
  out, _ = made
  t = 2
  flow = F.read_jpg_flow(out / f"flows/clip_a/{t:06d}_{t + 1:06d}_x.jpg", out / f"flows/clip_a/{t:06d}_{t + 1:06d}_y.jpg")
  y, x = TOP + DY * t, LEFT + DX * t
  inner = flow[y + 6:y + SQ - 6, x + 6:x + SQ - 6]
  med = np.median(inner.reshape(-1, 2), axis=0)
  assert abs(med[0] - DX) < 0.5 and abs(med[1] - DY) < 0.5, med
  # static background far from the square
  assert np.abs(np.median(flow[:, -30:].reshape(-1, 2), axis=0)).max() < 0.5


def test_records_hold_the_same_samples_as_the_files(made):
  out, _ = made
  for split in ("train", "val"):
    meta = json.loads((out / "records" / f"{split}.json").read_text())
    shards = sorted((out / "records").glob(f"{split}-*-of-*.tfrecord"))
    assert [s.name for s in shards] == [s["file"] for s in meta["shards"]]
    es = F.read_list_files(out / "lists" / f"{split}.txt", str(out), "jpg")
    assert meta["num_examples"] == len(es) == sum(s["num_examples"] for s in meta["shards"])
    assert len(shards) == -(-len(es) // 4)  # examples_per_shard=4
    recs = [r for s in shards for r in _read_records(s)]
    assert len(recs) == len(es)
    for rec, e in zip(recs, es):
      i1, i2, fl, key = F.decode_tfrecord_example(rec)
      f1, f2, ff = F.read_sample(e)
      assert key == os.path.relpath(e.img1, out)
      np.testing.assert_array_equal(i1, f1)
      np.testing.assert_array_equal(i2, f2)
      np.testing.assert_array_equal(fl, ff)


def _read_records(path):
  import tensorflow as tf
  return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def test_unreadable_video_is_named(tmp_path, capsys):
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(b"this is not a video" * 10)
  with pytest.raises(F.DataError, match=r"broken\.mp4"):
    P.prepare(_options([bad], tmp_path / "ds"))
  assert P.main(["--videos", str(bad), "--out", str(tmp_path / "ds")]) == 2
  assert "broken.mp4" in capsys.readouterr().err
  assert not (tmp_path / "ds" / "lists").exists()
  with pytest.raises(F.DataError, match=r"input not found: .*nothere\.avi"):
    P.prepare(_options([tmp_path / "nothere.avi"], tmp_path / "ds"))


def test_frame_folder_flo_files_and_float_records(tmp_path):
  folder = tmp_path / "shot"
  folder.mkdir()
  for t, f in enumerate(_frames(5, cut=False)):
    cv2.imwrite(str(folder / f"img{t + 1}.png"), f[:, :, ::-1])  # natural sort: img1 .. img5
  out = tmp_path / "ds"
  s = P.prepare(_options([folder], out, flow_format="flo", record_flow="float32", val_by="pairs", val_fraction=0.25))
  train = F.read_list_files(out / "lists" / "train.txt", str(out), "flo")
  val = F.read_list_files(out / "lists" / "val.txt", str(out), "flo")
  # 4 pairs; the last one is val, and the train pair sharing its first frame is dropped
  assert [e.flow[0].split("/")[-1] for e in val] == ["000003_000004.flo"]
  assert [e.flow[0].split("/")[-1] for e in train] == ["000000_000001.flo", "000001_000002.flo"]
  assert s["num_train"] == 2
  img1, _, flow = F.read_sample(train[1], "flo")
  y, x = TOP + DY, LEFT + DX
  med = np.median(flow[y + 6:y + SQ - 6, x + 6:x + SQ - 6].reshape(-1, 2), axis=0)
  assert abs(med[0] - DX) < 0.5 and abs(med[1] - DY) < 0.5
  (rec,) = _read_records(out / "records" / "val-00000-of-00001.tfrecord")
  np.testing.assert_array_equal(F.decode_tfrecord_example(rec)[2], F.read_flo(val[0].flow[0]))


def test_static_video_keeps_nothing_and_says_why(tmp_path):
  f = _frames(1, cut=False)[0]
  _write_video(tmp_path / "still.avi", [f] * 5)
  with pytest.raises(F.DataError, match=r"no pair was kept.*still\.avi.*'static': 4"):
    P.prepare(_options([tmp_path / "still.avi"], tmp_path / "ds", val_fraction=0.0))


def test_frame_step_pair_every_and_resize(tmp_path):
  _write_video(tmp_path / "v.avi", _frames(9, cut=False))
  out = tmp_path / "ds"
  s = P.prepare(_options([tmp_path / "v.avi"], out, frame_step=2, pair_every=3, short_side=48, val_fraction=0.0,
                         records=False, min_motion=0.5))
  lines = (out / "lists" / "train.txt").read_text().split()
  assert "frames/v/000000.jpg" in lines and "frames/v/000002.jpg" in lines and "frames/v/000003.jpg" in lines
  assert s["videos"]["v"]["candidate_pairs"] == 3  # t1 = 0, 3, 6
  assert s["videos"]["v"]["frame_size_wh"] == [64, 48]
  assert not (out / "lists" / "val.txt").exists() and not (out / "records").exists()


def test_bad_options_are_named(tmp_path):
  with pytest.raises(ValueError, match="--frame-step"):
    P.prepare(P.PrepareOptions(videos=(str(tmp_path / "x.avi"),), out=str(tmp_path / "ds"), frame_step=0))
  with pytest.raises(ValueError, match="exactly one of --videos and --from-lists"):
    P.prepare(P.PrepareOptions(out=str(tmp_path)))
  with pytest.raises(TypeError, match="frame_stepp"):
    P.PrepareOptions(videos=("x.avi",), out="ds", frame_stepp=2)


def test_command_line_builds_the_options():
  """Every option has a flag, with the dataclass's default; lists become tuples."""
  args = P.build_parser().parse_args(["--videos", "a.mp4", "b", "--out", "o"])
  assert P.PrepareOptions.from_args(args) == P.PrepareOptions(videos=("a.mp4", "b"), out="o")
  args = P.build_parser().parse_args(["--from-lists", "d", "--no-records", "--val-videos", "b", "--dis-gd-iters", "4"])
  assert P.PrepareOptions.from_args(args) == P.PrepareOptions(from_lists="d", records=False, val_videos=("b",),
                                                              dis_gd_iters=4)


def test_shipped_sample_is_consistent():
  """The sample's lists and records agree sample for sample, and its pairs move."""
  meta = json.loads(open(os.path.join(SAMPLE, "prepare.json")).read())
  for split in ("train", "val"):
    es = F.read_list_files(os.path.join(SAMPLE, "lists", f"{split}.txt"), SAMPLE, "jpg")
    rmeta = json.loads(open(os.path.join(SAMPLE, "records", f"{split}.json")).read())
    assert rmeta["num_examples"] == len(es) == meta[f"num_{split}"]
    recs = [r for s in rmeta["shards"] for r in _read_records(os.path.join(SAMPLE, "records", s["file"]))]
    assert len(recs) == len(es)
    moving = 0
    for rec, e in list(zip(recs, es))[::5]:
      i1, i2, fl, key = F.decode_tfrecord_example(rec)
      f1, f2, ff = F.read_sample(e)
      assert key == os.path.relpath(e.img1, SAMPLE)
      np.testing.assert_array_equal(i1, f1)
      np.testing.assert_array_equal(fl, ff)
      assert min(f1.shape[:2]) >= 160
      moving += np.percentile(np.hypot(ff[..., 0], ff[..., 1]), 90) >= 0.9
    assert moving >= 0.8 * len(es[::5])
  train_clips = {e.img1.split("/")[-2] for e in F.read_list_files(os.path.join(SAMPLE, "lists", "train.txt"), SAMPLE)}
  val_clips = {e.img1.split("/")[-2] for e in F.read_list_files(os.path.join(SAMPLE, "lists", "val.txt"), SAMPLE)}
  assert train_clips and val_clips and not train_clips & val_clips  # split by clip


def test_records_from_lists(tmp_path, made):
  out, _ = made
  metas = P.records_from_lists(str(out), out=str(tmp_path), record_flow="float16", examples_per_shard=100)
  assert set(metas) == {"train", "val"}
  (rec,) = _read_records(tmp_path / "records" / "val-00000-of-00001.tfrecord")[:1]
  e = F.read_list_files(out / "lists" / "val.txt", str(out))[0]
  fl = F.decode_tfrecord_example(rec)[2]
  assert np.abs(fl - F.read_sample(e)[2]).max() <= 0.02  # float16 of the JPEG-decoded flow


# ----------------------------------------------------------------------------
# An --out that already holds files; one input video


def test_a_non_empty_out_is_refused_before_any_work(tmp_path, capsys):
  _write_video(tmp_path / "v.avi", _frames(6, cut=False))
  out = tmp_path / "ds"
  out.mkdir()
  (out / "old.txt").write_text("an earlier dataset")
  with pytest.raises(ValueError, match="is not empty; give --overwrite .* or --append"):
    P.prepare(_options([tmp_path / "v.avi"], out))
  assert sorted(os.listdir(out)) == ["old.txt"]  # nothing computed, nothing written
  assert P.main(["--videos", str(tmp_path / "v.avi"), "--out", str(out), "--overwrite", "--append"]) == 2
  assert "at most one of --overwrite and --append" in capsys.readouterr().err


def test_one_video_splits_by_pairs_with_a_note(tmp_path, capsys):
  _write_video(tmp_path / "v.avi", _frames(8, cut=False))
  summary = P.prepare(_options([tmp_path / "v.avi"], tmp_path / "ds", min_motion=0.5, val_fraction=0.25))
  assert "one input video" in capsys.readouterr().err
  assert summary["num_train"] > 0 and summary["num_val"] > 0
  assert summary["options"]["val_by"] == "pairs"


def test_overwrite_replaces_and_append_adds_new_videos_only(tmp_path):
  _write_video(tmp_path / "a.avi", _frames(8, cut=False))
  _write_video(tmp_path / "b.avi", _frames(7, cut=False))
  out = tmp_path / "ds"
  out.mkdir()
  (out / "stale.txt").write_text("from before")
  first = P.prepare(_options([tmp_path / "a.avi"], out, overwrite=True, val_fraction=0.25))
  assert not (out / "stale.txt").exists() and not os.path.exists(str(out) + ".prepare-tmp")
  lists = {sp: (out / "lists" / f"{sp}.txt").read_text().splitlines() for sp in ("train", "val")}

  both = P.prepare(_options([tmp_path / "b.avi"], out, append=True, val_videos=("b",)))
  assert set(both["videos"]) == {"a", "b"} and both["num_train"] == first["num_train"]
  val = (out / "lists" / "val.txt").read_text().splitlines()
  assert val[:len(lists["val"])] == lists["val"] and all("/b/" in line for line in val[len(lists["val"]):])
  assert (out / "lists" / "train.txt").read_text().splitlines() == lists["train"]
  es = F.read_list_files(str(out / "lists" / "val.txt"), str(out))
  assert all(os.path.exists(e.img1) for e in es)
  with pytest.raises(ValueError, match="already holds video.* named b"):
    P.prepare(_options([tmp_path / "b.avi"], out, append=True))
