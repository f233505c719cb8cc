"""Base class of the project's tfds builders."""

import inspect

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder whose source file is found without `importlib_resources`.

  tfds 4.9.10 looks the builder's package up through the `importlib_resources` backport, which
  it only declares as a dependency for Python < 3.9; resolving the path from the class's own
  module file avoids that import on Python 3.11. The path is only used to look for a (never
  present) checksums file, since nothing is downloaded.
  """

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))
