"""What every command line of cmp-jax shares.

Flags are absl flags with an ml_collections `--config` file, so `--config.KEY=VALUE` means the same in
train.py, eval.py, propagate, convert and the demos (a later override of a key replaces an earlier one).
Each call parses into its own `FlagValues`, so a tool's `main(argv)` can be called from Python and tests.

A user's error (a bad flag, config key, file or setting) is reported as one line on stderr naming what is
wrong, with exit code 2 and no traceback: `fail(message)`, or an exception of a type passed to `run`.
"""

import os
import re
import sys
import traceback
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tf.data's start-up banners
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its notice on stderr (tf.data runs no oneDNN op)

from absl import flags
from ml_collections import config_flags

CONFIG_HELP = "config file (configs/*.py; FILE:ARG passes ARG to get_config); override keys with --config.KEY=VALUE"


class UsageError(ValueError):
  """A command line that cannot be used: an unknown or missing flag, a bad value."""


_terminal = None  # the real stderr, once `libraries_to_file` has sent file descriptor 2 elsewhere


def fail(message, code=2):
  """Reports a user's error as one line on stderr and exits with `code` (2)."""
  print(f"error: {message}", file=_terminal or sys.stderr, flush=True)
  sys.exit(code)


def libraries_to_file(path):
  """From now on what the libraries write to stderr (JAX, XLA, TensorFlow, orbax and the threads of its
  writers, also from C++) goes to the file `path`; `fail` and the tracebacks of uncaught exceptions still
  reach the terminal. Standard output is unchanged."""
  global _terminal
  _terminal = os.fdopen(os.dup(2), "w", buffering=1)
  log = open(path, "a", buffering=1)
  os.dup2(log.fileno(), 2)
  sys.excepthook = lambda *exc: traceback.print_exception(*exc, file=_terminal)


def _last_override_wins(argv):
  """Drops every `--config.KEY=...` that a later one of the same KEY replaces (ml_collections would
  concatenate tuple values given twice)."""
  keys = [a.split("=", 1)[0] if a.startswith("--config.") else None for a in argv]
  return [a for i, (a, k) in enumerate(zip(argv, keys)) if k is None or k not in keys[i + 1:]]


def parse(argv: Sequence[str], define: Callable[[flags.FlagValues], None], doc: str = "",
          required: Sequence[str] = ("config",), positional: int = 0):
  """Parses `argv` (argv[0] is the program) into a new FlagValues with `--config` and what `define` adds.

  Returns (flag values, positional arguments). Raises UsageError for an unknown flag or config key, a bad
  value, a missing required flag, an unloadable config file or a wrong number of positional arguments.
  `--help` prints `doc` and the flags, then exits 0.
  """
  argv = _last_override_wins(list(argv))
  # config_flags loads every config file as module 'config_config' into the namespace of the one loaded
  # before: a second file without get_config() would run the first one's.
  sys.modules.pop("config_config", None)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, CONFIG_HELP, flag_values=fv, lock_config=True, sys_argv=argv)
  define(fv)
  if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
    print(doc.strip() + "\n\nflags:\n" + fv.get_help())
    sys.exit(0)
  try:
    rest = fv(argv)
  except flags.UnrecognizedFlagError as e:
    name = e.flagname
    if name.startswith("config."):
      raise UsageError(f"{name}: no such key in the config ({_config_file(argv)}); see cmp_jax/config_lib.py "
                       "base() for the keys") from None
    raise UsageError(f"--{name}: unknown flag (see --help)") from None
  except (AttributeError, KeyError) as e:  # config_flags: a --config.KEY that names no field
    found = re.search(r"'([^'\\]+)", str(e))
    name = found.group(1) if found else ""
    key = next((a.split("=", 1)[0][2:] for a in argv if a.startswith("--config.")
                and a.split("=", 1)[0].rsplit(".", 1)[-1] == name), None)
    if key is None:
      raise UsageError(f"--config {_config_file(argv)}: {str(e).strip(chr(34))}") from None
    raise UsageError(f"{key}: no such key in the config ({_config_file(argv)}); see cmp_jax/config_lib.py "
                     "base() for the keys") from None
  except flags.Error as e:
    if len(str(e).strip().splitlines()) > 1:  # config_flags puts a failed config file's traceback in it
      raise _config_load_error(argv, e) from None
    raise UsageError(str(e)) from None
  except Exception as e:  # config_flags wraps a config file that fails to load
    raise _config_load_error(argv, e) from None
  missing = [f"--{n}" for n in required if fv[n].value is None]
  if missing:
    raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (see --help)")
  try:
    fv.config.keys()  # a config file that failed to load raises here
  except Exception as e:  # config_flags wraps every load failure
    raise _config_load_error(argv, e) from None
  if len(rest) - 1 != positional:
    raise UsageError(f"expected {positional} positional argument(s), got {rest[1:]} (see --help)")
  return fv, rest[1:]


def _config_load_error(argv, e):
  """A config file that failed to load, in one line: the last line of the error (a traceback's is its
  exception)."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return UsageError(f"--config {_config_file(argv)}: {lines[-1] if lines else type(e).__name__}")


def _config_file(argv):
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "no --config given"


def main_of(argv, define, body, doc="", required=("config",), user_errors=()):
  """The `main(argv)` of a tool: parses `argv` (see `parse`) and returns `body(flags)`; a UsageError, an
  OSError or one of `user_errors` is reported as one `error:` line and gives exit code 2."""
  try:
    args, _ = parse(argv, define, doc, required)
    return body(args)
  except (UsageError, OSError) + tuple(user_errors) as e:
    print(f"error: {e}", file=_terminal or sys.stderr, flush=True)
    return 2


def run(main: Callable[[Sequence[str]], int], user_errors=()):
  """Runs `main(sys.argv)` as a program: its return value is the exit code; UsageError and `user_errors`
  are reported by `fail`."""
  try:
    code = main(sys.argv)
  except (UsageError,) + tuple(user_errors) as e:
    fail(e)
  sys.exit(code or 0)
