"""rubiks-jax: RubiksNet (learnable 3D shift for video action recognition) in JAX/Flax.

Importing the package loads only JAX; data pipelines import TensorFlow lazily.
"""

__version__ = "0.1.0"
