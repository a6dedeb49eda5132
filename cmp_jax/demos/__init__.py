"""The original's three demos over `cmp_jax.inference`: guided video generation (`animate`), semi-automatic
annotation (`annotate`) and an interactive page wiring both and the flow picture (`app`)."""
