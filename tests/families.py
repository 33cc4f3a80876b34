"""Small models of today's families, written as their users write them (Flax linen, NNX, Equinox):
MobileNetV2 (ReLU6, depthwise convs) in linen and NNX, DenseNet, GoogLeNet-style inception,
EfficientNet (SiLU, squeeze-excitation), ConvNeXt (LayerNorm, GELU), a ViT, a leaky-ReLU +
dropout CNN, an average-pool/flatten CNN and an Equinox ``Sequential`` CNN.

``FAMILIES[name]() -> (model, variables, x)`` with ``model(variables, x)`` or a linen Module.
"""

from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_CLASSES = 5


def _bn():
    return nn.BatchNorm(use_running_average=True)


class InvertedResidual(nn.Module):
    features: int
    expand: int = 2
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        h = nn.relu6(_bn()(nn.Conv(c * self.expand, (1, 1), use_bias=False)(x)))
        h = nn.Conv(c * self.expand, (3, 3), strides=self.stride, feature_group_count=c * self.expand,
                    use_bias=False)(h)
        h = jnp.clip(_bn()(h), 0, 6)
        h = _bn()(nn.Conv(self.features, (1, 1), use_bias=False)(h))
        return x + h if self.stride == 1 and c == self.features else h


class MobileNetV2(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu6(_bn()(nn.Conv(8, (3, 3), strides=2, use_bias=False)(x)))
        x = InvertedResidual(8)(x)
        x = InvertedResidual(12, stride=2)(x)
        x = nn.relu6(_bn()(nn.Conv(16, (1, 1), use_bias=False)(x)))
        return nn.Dense(NUM_CLASSES)(jnp.mean(x, axis=(1, 2)))


class DenseLayer(nn.Module):
    growth: int = 4

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.growth, (3, 3), use_bias=False)(nn.relu(_bn()(x)))
        return jnp.concatenate([x, h], axis=-1)


class DenseBlock(nn.Module):
    layers: int = 2

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = DenseLayer()(x)
        return x


class DenseNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), use_bias=False)(x)
        x = DenseBlock(name="block1")(x)
        x = nn.Conv(8, (1, 1), use_bias=False)(nn.relu(_bn()(x)))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = DenseBlock(name="block2")(x)
        x = nn.relu(_bn()(x))
        return nn.Dense(NUM_CLASSES)(jnp.mean(x, axis=(1, 2)))


class Inception(nn.Module):
    @nn.compact
    def __call__(self, x):
        b1 = nn.relu(nn.Conv(4, (1, 1))(x))
        b2 = nn.relu(nn.Conv(6, (3, 3))(nn.relu(nn.Conv(4, (1, 1))(x))))
        b3 = nn.relu(nn.Conv(2, (5, 5))(nn.relu(nn.Conv(2, (1, 1))(x))))
        b4 = nn.relu(nn.Conv(4, (1, 1))(nn.max_pool(x, (3, 3), (1, 1), padding="SAME")))
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = Inception(name="inception3a")(x)
        x = Inception(name="inception3b")(x)
        return nn.Dense(NUM_CLASSES)(jnp.mean(x, axis=(1, 2)))


class SqueezeExcite(nn.Module):
    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.silu(nn.Conv(2, (1, 1))(s))
        s = nn.sigmoid(nn.Conv(x.shape[-1], (1, 1))(s))
        return x * s


class MBConv(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        h = nn.silu(_bn()(nn.Conv(c * 2, (1, 1), use_bias=False)(x)))
        h = nn.silu(_bn()(nn.Conv(c * 2, (3, 3), feature_group_count=c * 2, use_bias=False)(h)))
        h = SqueezeExcite()(h)
        h = _bn()(nn.Conv(self.features, (1, 1), use_bias=False)(h))
        return x + h if c == self.features else h


class EfficientNet(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = nn.silu(_bn()(nn.Conv(8, (3, 3), strides=2, use_bias=False)(x)))
        x = MBConv(8)(x)
        x = MBConv(12)(x)
        x = nn.silu(_bn()(nn.Conv(16, (1, 1), use_bias=False)(x)))
        return nn.Dense(NUM_CLASSES, use_bias=self.bias)(jnp.mean(x, axis=(1, 2)))


class ConvNeXtBlock(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        h = nn.Conv(c, (7, 7), feature_group_count=c, use_bias=self.bias)(x)
        h = nn.LayerNorm(epsilon=1e-6, use_bias=self.bias)(h)
        h = nn.gelu(nn.Dense(4 * c, use_bias=self.bias)(h))
        h = nn.Dense(c, use_bias=self.bias)(h)
        return x + h


class ConvNeXt(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (4, 4), strides=4, use_bias=self.bias)(x)
        x = nn.LayerNorm(epsilon=1e-6, use_bias=self.bias)(x)
        x = ConvNeXtBlock(self.bias)(x)
        x = ConvNeXtBlock(self.bias)(x)
        x = nn.LayerNorm(epsilon=1e-6, use_bias=self.bias)(jnp.mean(x, axis=(1, 2)))
        return nn.Dense(NUM_CLASSES, use_bias=self.bias)(x)


class EncoderBlock(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(use_bias=self.bias)(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, use_bias=self.bias, deterministic=True)(h, h)
        h = nn.LayerNorm(use_bias=self.bias)(x)
        h = nn.Dense(x.shape[-1], use_bias=self.bias)(nn.gelu(nn.Dense(2 * x.shape[-1], use_bias=self.bias)(h)))
        return x + h


class ViT(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        d = 8
        x = nn.Conv(d, (4, 4), strides=4, use_bias=self.bias, name="patch_embed")(x)
        n, h, w, _ = x.shape
        x = x.reshape(n, h * w, d)
        cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, d)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1, h * w + 1, d))
        for i in range(2):
            x = EncoderBlock(self.bias, name=f"blocks_{i}")(x)
        x = nn.LayerNorm(use_bias=self.bias)(x)
        return nn.Dense(NUM_CLASSES, use_bias=self.bias, name="head")(x[:, 0])


class LeakyDropout(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.leaky_relu(nn.Conv(6, (3, 3))(x), 0.1)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.Dropout(0.5, deterministic=True)(nn.leaky_relu(nn.Conv(8, (3, 3))(x), 0.1))
        return nn.Dense(NUM_CLASSES)(x.reshape(x.shape[0], -1))


class AvgFlatten(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.avg_pool(nn.relu(nn.Conv(6, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(NUM_CLASSES)(nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1))))


def _linen(cls, size=16, **kw):
    def build():
        model = cls(**kw)
        x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
        variables = model.init(jax.random.key(0), x)
        if "batch_stats" in variables:  # non-trivial running statistics: means ~ ±0.2, variances in [0.5, 1.5]
            def stat(path, a):
                k = jax.random.fold_in(jax.random.key(2), zlib.crc32(jax.tree_util.keystr(path).encode()))
                if "mean" in jax.tree_util.keystr(path):
                    return jax.random.uniform(k, a.shape, a.dtype, -0.2, 0.2)
                return jax.random.uniform(k, a.shape, a.dtype, 0.5, 1.5)
            variables = {**variables, "batch_stats": jax.tree_util.tree_map_with_path(stat, variables["batch_stats"])}
        return model, variables, x

    return build


def mobilenet_nnx():
    """MobileNetV2's first blocks in Flax NNX (``model.eval()``), called through ``nnx.merge``."""
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, c, rngs):
            self.expand = nnx.Conv(c, 2 * c, (1, 1), use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(2 * c, rngs=rngs)
            self.dw = nnx.Conv(2 * c, 2 * c, (3, 3), feature_group_count=2 * c, use_bias=False, rngs=rngs)
            self.bn2 = nnx.BatchNorm(2 * c, rngs=rngs)
            self.project = nnx.Conv(2 * c, c, (1, 1), use_bias=False, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu6(self.bn1(self.expand(x)))
            h = nnx.relu6(self.bn2(self.dw(h)))
            return x + self.project(h)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.stem = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
            self.block = Block(8, rngs)
            self.head = nnx.Linear(8, NUM_CLASSES, rngs=rngs)

        def __call__(self, x):
            x = self.block(nnx.relu6(self.stem(x)))
            return self.head(jnp.mean(x, axis=(1, 2)))

    net = Net(nnx.Rngs(0))
    net.eval()
    graphdef, state = nnx.split(net)

    def model(state, x):
        return nnx.merge(graphdef, state)(x)

    return model, state, jax.random.normal(jax.random.key(1), (2, 16, 16, 3))


def equinox_cnn():
    """An Equinox ``Sequential`` CNN (channels first inside, vmapped over the batch; x NHWC outside)."""
    import equinox as eqx

    k = jax.random.split(jax.random.key(0), 3)
    net = eqx.nn.Sequential([
        eqx.nn.Conv2d(3, 6, 3, padding=1, key=k[0]), eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Conv2d(6, 8, 3, padding=1, key=k[1]), eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.Lambda(lambda h: jnp.mean(h, axis=(1, 2))),
        eqx.nn.Linear(8, NUM_CLASSES, key=k[2]),
    ])
    params, static = eqx.partition(net, eqx.is_array)

    def model(params, x):
        m = eqx.combine(params, static)
        return jax.vmap(m)(jnp.moveaxis(x, -1, 1))

    return model, params, jax.random.normal(jax.random.key(1), (2, 16, 16, 3))


FAMILIES = {
    "mobilenet_v2": _linen(MobileNetV2),
    "mobilenet_v2_nnx": mobilenet_nnx,
    "densenet": _linen(DenseNet),
    "googlenet": _linen(GoogLeNet),
    "efficientnet": _linen(EfficientNet),
    "convnext": _linen(ConvNeXt),
    "vit": _linen(ViT),
    "leaky_dropout": _linen(LeakyDropout),
    "avg_flatten": _linen(AvgFlatten),
    "equinox_cnn": equinox_cnn,
}
