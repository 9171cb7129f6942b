"""TFDS builders of this project: the built-in synthetic set (`rubiks_synthetic`) and the real
data sets that must be downloaded by hand.

Importing this package registers `rubiks_ssv2`, `rubiks_hmdb51` and `rubiks_ucf101` (configs
split1/2/3) and `rubiks_kinetics400` with TFDS, so `tfds.builder("rubiks_ssv2", data_dir=...)` finds
them. Each reads the files that its MANUAL_DOWNLOAD_INSTRUCTIONS list from
`DownloadConfig(manual_dir=...)`: annotation files and frame folders, which
`python -m rubiks_jax.data.prepare` makes from the data set as downloaded.
"""

from rubiks_jax.data.builders.common import ManualDataError
from rubiks_jax.data.builders.hmdb51 import RubiksHmdb51
from rubiks_jax.data.builders.kinetics400 import RubiksKinetics400
from rubiks_jax.data.builders.ssv2 import RubiksSsv2
from rubiks_jax.data.builders.synthetic import RubiksSynthetic
from rubiks_jax.data.builders.ucf101 import RubiksUcf101

__all__ = ["ManualDataError", "RubiksHmdb51", "RubiksKinetics400", "RubiksSsv2", "RubiksSynthetic",
           "RubiksUcf101"]
