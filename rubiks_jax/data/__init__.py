"""Video data: TFDS builders (synthetic, Something-Something-V2, HMDB51, Kinetics-400, UCF101; TFDS's
own UCF101 too), `prepare` (a download's videos to frame folders, once), TSN sampling, augmentation
and the input pipeline.

Everything here imports TensorFlow; `import rubiks_jax` and the ops, layers and models do not, so
import these modules only where data is read.
"""
