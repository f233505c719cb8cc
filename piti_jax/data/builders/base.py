"""Base class of the project's tfds builders."""

import inspect
import os

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from piti_jax.data.builders.common import BadInputLog


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


class LocalFilesBuilder(LocalBuilder, skip_registration=True):
  """A builder that reads the user's files from `manual_dir` (a local folder or a URI) and never downloads.

  Unreadable images are handled by the `on_bad_example` policy ("skip": logged, counted and left
  out; "raise": stop). What was skipped is saved with the dataset (info.metadata["skipped"]).
  """

  def __init__(self, *, manual_dir: str = "", on_bad_example: str = "skip", **kwargs):
    self._manual_dir = os.path.expanduser(manual_dir) if manual_dir else ""
    self._bad_inputs = BadInputLog(on_bad_example)
    super().__init__(**kwargs)

  @property
  def manual_dir(self) -> str:
    return self._manual_dir

  @property
  def bad_inputs(self) -> BadInputLog:
    return self._bad_inputs

  def _info_with_metadata(self, **kwargs) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(metadata=tfds.core.MetadataDict(skipped={}), **kwargs)

  def record_skipped(self, split: str, start: int) -> None:
    """Stores the inputs skipped since position `start` of the log under info.metadata["skipped"][split]."""
    self.info.metadata["skipped"][split] = self._bad_inputs.skipped[start:]
