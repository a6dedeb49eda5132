"""cmp-jax: Conditional Motion Propagation (Zhan et al., CVPR 2019) in JAX/Flax."""

__version__ = "0.1.0"
