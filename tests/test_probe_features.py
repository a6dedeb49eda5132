"""Features of the frozen encoder: the chosen layers, their resolutions, no gradient, the checkpoint check."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cmp_jax.probe import features


@pytest.fixture(scope="module")
def resnet18():
  cfg = ml_collections.ConfigDict(dict(image_encoder="resnet18", img_enc_dim=256, dtype="float32"))
  enc = features.build_encoder(cfg)
  return enc, features.random_variables(enc, 32, seed=0)


def test_layers_concatenated_at_the_finest_resolution(resnet18):
  enc, v = resnet18
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  maps = features.make_feature_fn(enc, ("layer1", "out"), pool=False)(v, images)
  assert maps.shape == (2, 8, 8, 64 + 256)  # layer1 at 1/4, out (1/8) upsampled to it
  pooled_fn = features.make_feature_fn(enc, ("layer4", "out"), pool=True)
  pooled = pooled_fn(v, images)
  assert pooled.shape == (2, 512 + 256)
  np.testing.assert_allclose(pooled[:, 512:], maps[..., 64:].mean(axis=(1, 2)), rtol=0.2)  # 4x4 vs its upsampling
  # frozen: no gradient reaches the encoder's parameters
  grads = jax.grad(lambda p: jnp.sum(pooled_fn({"params": p, "batch_stats": v["batch_stats"]}, images)))(v["params"])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_bad_layer_and_size(resnet18):
  enc, _ = resnet18
  with pytest.raises(features.FeatureError, match="'fc7' is not a layer of resnet18"):
    features.check_layers(enc, ("fc7",))
  with pytest.raises(features.FeatureError, match="multiple of 8"):
    features.check_image_size(enc, 60)
