"""Atomic file writes: a file is written under a temporary name beside its destination and renamed onto it
once complete, so a reader (or a resumed run) never sees it half-written and a failed write keeps the old
file. Every file cmp-jax writes goes through here (checkpoints go through orbax, which does the same)."""

import contextlib
import os
import tempfile


def _read_umask():
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, so not per write


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path in `path`'s folder (created if needed) to write; on success the file gets the
  usual permissions and replaces `path`, on any error it is removed."""
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_bytes(path, data):
  """Writes `data` to `path` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
