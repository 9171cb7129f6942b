"""Video data: TFDS builders (synthetic, Something-Something-V2, HMDB51, Kinetics-400, TFDS's
UCF101), TSN sampling, augmentation and the input pipeline.

Everything here imports TensorFlow; `import rubiks_jax` and the ops, layers and models do not, so
import these modules only where data is read.
"""
