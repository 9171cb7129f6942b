"""Small forward + backward of every dtype on the GPU, for compute-sanitizer runs."""

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax.ops import rubiks_shift

rng = np.random.default_rng(0)
for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
    for stride, padding in (((1, 1, 1), (0, 0, 0)), ((2, 2, 1), (1, 0, 2))):
        x = jnp.asarray(rng.standard_normal((2, 5, 7, 9, 13)), dtype)
        s = jnp.asarray(rng.uniform(-6, 6, (13, 3)), jnp.float32)
        y, vjp = jax.vjp(lambda a, b: rubiks_shift(a, b, stride=stride, padding=padding,
                                                   impl="ffi"), x, s)
        jax.block_until_ready(vjp(jnp.ones_like(y)))
print("gpu smoke ok on", jax.devices()[0])
