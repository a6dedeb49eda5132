"""cmp_jax.cli: the command line every tool shares, and train_lib.itstime."""

import pytest
from absl import flags

from cmp_jax import cli, train_lib

QUICKSTART = "configs/quickstart.py"


def _parse(*args, **kw):
  def define(fv):
    flags.DEFINE_string("out", None, "an output", flag_values=fv)
  return cli.parse(["prog", "--config", QUICKSTART, *args], define, **kw)


def test_overrides_and_flags():
  fv, rest = _parse("--config.batch_size=3", "--out=x", "--config.data.crop_size=(64,64)")
  assert fv.config.batch_size == 3 and tuple(fv.config.data.crop_size) == (64, 64) and fv.out == "x"
  assert rest == []


def test_a_later_override_replaces_an_earlier_one_also_for_tuples():
  # ml_collections alone would concatenate the two tuples: training on both lists.
  fv, _ = _parse("--config.data.train_source=('a.txt',)", "--config.data.train_source=('b.txt',)",
                 "--config.batch_size=2", "--config.batch_size=5")
  assert tuple(fv.config.data.train_source) == ("b.txt",) and fv.config.batch_size == 5


@pytest.mark.parametrize("args, message", [
    (("--config.data.crop_sise=(64,64)",), "config.data.crop_sise: no such key in the config"),
    (("--config.nokey=1",), "config.nokey: no such key"),
    (("--config.batch_size=abc",), "--config.batch_size=abc"),
    (("--bogus=1",), "--bogus: unknown flag"),
    (("extra",), "positional"),
])
def test_usage_errors_name_the_flag(args, message):
  with pytest.raises(cli.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
    _parse(*args)


def test_required_flags_and_bad_config_files(tmp_path):
  with pytest.raises(cli.UsageError, match="--out is required"):
    _parse(required=("config", "out"))
  (tmp_path / "noget.py").write_text("x = 1\n")
  for path, message in ((tmp_path / "nope.py", "nope.py"), (tmp_path / "noget.py", "get_config")):
    with pytest.raises(cli.UsageError, match=message):
      cli.parse(["prog", "--config", str(path)], lambda fv: None)


def test_config_variant_argument():
  fv, _ = cli.parse(["prog", "--config", QUICKSTART + ":smoke"], lambda fv: None)
  assert fv.config.total_iter == 20
  # An unknown variant: one line naming the file and the variant, not the config file's traceback.
  with pytest.raises(cli.UsageError) as err:
    cli.parse(["prog", "--config", QUICKSTART + ":nope"], lambda fv: None)
  assert "quickstart.py" in str(err.value) and "'nope'" in str(err.value)
  assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def test_itstime_every_n_and_at_the_last_step():
  assert [s for s in range(1, 11) if train_lib.itstime(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 4) if train_lib.itstime(s, 100, 3)] == [3]
