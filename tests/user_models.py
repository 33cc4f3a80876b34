"""ResNet18 and VGG16 written the way each framework's documentation writes models, for the tests.

Every form is loaded with the same torchvision weights (``torch_pair``): the zoo model from our
converter; idiomatic Flax linen (``nn.relu``, ``nn.max_pool``, ``x + y``, ``jnp.mean``,
``nn.BatchNorm``); Flax NNX (``nnx.split`` / ``nnx.merge``); Equinox (channels-first, one sample,
``jax.vmap``-ed, ``eqx.partition`` / ``eqx.combine``, running statistics closed over); and a plain
function of a parameter dict. Each ``*_form(torch_model, zoo_variables)`` returns
``(model, variables)`` with ``model(variables, x)`` (or a linen Module) on NHWC ``x``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

EPS = 1e-5
STAGES = (64, 128, 256, 512)
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _np(a, dtype):
    return np.asarray(a, dtype=dtype)


def _blocks():
    """(stage index, block index, stride, has downsample) of ResNet18's eight blocks."""
    for i in range(4):
        for j in range(2):
            first = i > 0 and j == 0
            yield i, j, (2 if first else 1), first


# ----------------------------------------------------------------------------------------------
# Flax linen, as the Flax docs write a ResNet


class LinenBlock(nn.Module):
    features: int
    strides: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.features, (3, 3), self.strides, padding=1, use_bias=False, name="conv1")(x)
        y = nn.BatchNorm(use_running_average=True, name="bn1")(y)
        y = nn.relu(y)
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(y)
        y = nn.BatchNorm(use_running_average=True, name="bn2")(y)
        if self.downsample:
            x = nn.Conv(self.features, (1, 1), self.strides, use_bias=False, name="proj_conv")(x)
            x = nn.BatchNorm(use_running_average=True, name="proj_bn")(x)
        return nn.relu(y + x)


class LinenResNet18(nn.Module):
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False, name="conv_init")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, j, s, down in _blocks():
            x = LinenBlock(STAGES[i], s, down, name=f"block{i}_{j}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


class LinenVGG16(nn.Module):
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        k = 0
        for v in VGG16_CFG:
            if v == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                x = nn.relu(nn.Conv(v, (3, 3), padding=1, name=f"conv{k}")(x))
                k += 1
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(4096, name="fc1")(x))
        x = nn.relu(nn.Dense(4096, name="fc2")(x))
        return nn.Dense(self.num_classes, name="fc3")(x)


def _bn(zoo, name):
    p, s = zoo["params"], zoo["batch_stats"]
    for part in name.split("."):
        p, s = p[part], s[part]
    return {"scale": p["scale"], "bias": p["bias"]}, {"mean": s["mean"], "var": s["var"]}


def _get(tree, name):
    for part in name.split("."):
        tree = tree[part]
    return tree


def linen_resnet18(zoo):
    params, stats = {}, {}

    def put(dst, src_conv, src_bn, conv, bn):
        d = params.setdefault(dst, {}) if dst else params
        ds = stats.setdefault(dst, {}) if dst else stats
        d[conv] = {"kernel": _get(zoo["params"], src_conv)["kernel"]}
        d[bn], ds[bn] = _bn(zoo, src_bn)

    put("", "conv1", "bn1", "conv_init", "bn_init")
    for i, j, _, down in _blocks():
        dst, src = f"block{i}_{j}", f"layer{i + 1}.{j}"
        put(dst, f"{src}.conv1", f"{src}.bn1", "conv1", "bn1")
        put(dst, f"{src}.conv2", f"{src}.bn2", "conv2", "bn2")
        if down:
            put(dst, f"{src}.downsample.0", f"{src}.downsample.1", "proj_conv", "proj_bn")
    params["head"] = dict(zoo["params"]["fc"])
    return LinenResNet18(), {"params": params, "batch_stats": stats}


def _features_indices():
    """torchvision ``features.i`` index of each conv of VGG16 (ReLUs and pools in between)."""
    idx, out = 0, []
    for v in VGG16_CFG:
        if v == "M":
            idx += 1
        else:
            out.append(idx)
            idx += 2
    return out


def linen_vgg16(zoo):
    p = zoo["params"]
    params = {f"conv{k}": dict(p["features"][str(i)]) for k, i in enumerate(_features_indices())}
    for k, i in ((1, 0), (2, 3), (3, 6)):
        params[f"fc{k}"] = dict(p["classifier"][str(i)])
    return LinenVGG16(), {"params": params}


# ----------------------------------------------------------------------------------------------
# Flax NNX


def nnx_resnet18(zoo):
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, cin, features, strides, downsample, rngs):
            self.conv1 = nnx.Conv(cin, features, (3, 3), strides=strides, padding=1, use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(features, use_running_average=True, rngs=rngs)
            self.conv2 = nnx.Conv(features, features, (3, 3), padding=1, use_bias=False, rngs=rngs)
            self.bn2 = nnx.BatchNorm(features, use_running_average=True, rngs=rngs)
            self.downsample = nnx.Sequential(
                nnx.Conv(cin, features, (1, 1), strides=strides, use_bias=False, rngs=rngs),
                nnx.BatchNorm(features, use_running_average=True, rngs=rngs),
            ) if downsample else None

        def __call__(self, x):
            y = nnx.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            skip = x if self.downsample is None else self.downsample(x)
            return nnx.relu(y + skip)

    class ResNet18(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(3, 64, (7, 7), strides=2, padding=3, use_bias=False, rngs=rngs)
            self.bn1 = nnx.BatchNorm(64, use_running_average=True, rngs=rngs)
            cin = 64
            for i in range(4):
                blocks = []
                for j in range(2):
                    first = i > 0 and j == 0
                    blocks.append(Block(cin, STAGES[i], 2 if first else 1, first, rngs))
                    cin = STAGES[i]
                setattr(self, f"layer{i + 1}", nnx.List(blocks))
            self.fc = nnx.Linear(512, 1000, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn1(self.conv1(x)))
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in stage:
                    x = block(x)
            return self.fc(x.mean(axis=(1, 2)))

    model = ResNet18(nnx.Rngs(0))

    def conv(mod, name):
        mod.kernel[...] = jnp.asarray(_get(zoo["params"], name)["kernel"])

    def bn(mod, name):
        pp, ss = _bn(zoo, name)
        for k, v in {**pp, **ss}.items():
            getattr(mod, k)[...] = jnp.asarray(v)

    conv(model.conv1, "conv1")
    bn(model.bn1, "bn1")
    for i, j, _, down in _blocks():
        b = getattr(model, f"layer{i + 1}")[j]
        src = f"layer{i + 1}.{j}"
        conv(b.conv1, f"{src}.conv1")
        bn(b.bn1, f"{src}.bn1")
        conv(b.conv2, f"{src}.conv2")
        bn(b.bn2, f"{src}.bn2")
        if down:
            conv(b.downsample.layers[0], f"{src}.downsample.0")
            bn(b.downsample.layers[1], f"{src}.downsample.1")
    model.fc.kernel[...] = jnp.asarray(zoo["params"]["fc"]["kernel"])
    model.fc.bias[...] = jnp.asarray(zoo["params"]["fc"]["bias"])
    graphdef, state = nnx.split(model)
    return (lambda state, x: nnx.merge(graphdef, state)(x)), state


def nnx_vgg16(zoo):
    from flax import nnx

    class VGG16(nnx.Module):
        def __init__(self, rngs):
            convs, cin = [], 3
            for v in VGG16_CFG:
                if v != "M":
                    convs.append(nnx.Conv(cin, v, (3, 3), padding=1, rngs=rngs))
                    cin = v
            self.convs = nnx.List(convs)
            self.fc1 = nnx.Linear(512 * 7 * 7, 4096, rngs=rngs)
            self.fc2 = nnx.Linear(4096, 4096, rngs=rngs)
            self.fc3 = nnx.Linear(4096, 1000, rngs=rngs)

        def __call__(self, x):
            k = 0
            for v in VGG16_CFG:
                if v == "M":
                    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
                else:
                    x = nnx.relu(self.convs[k](x))
                    k += 1
            x = x.reshape(x.shape[0], -1)
            x = nnx.relu(self.fc1(x))
            x = nnx.relu(self.fc2(x))
            return self.fc3(x)

    model = VGG16(nnx.Rngs(0))
    p = zoo["params"]
    for k, i in enumerate(_features_indices()):
        model.convs[k].kernel[...] = jnp.asarray(p["features"][str(i)]["kernel"])
        model.convs[k].bias[...] = jnp.asarray(p["features"][str(i)]["bias"])
    for fc, i in ((model.fc1, 0), (model.fc2, 3), (model.fc3, 6)):
        fc.kernel[...] = jnp.asarray(p["classifier"][str(i)]["kernel"])
        fc.bias[...] = jnp.asarray(p["classifier"][str(i)]["bias"])
    graphdef, state = nnx.split(model)
    return (lambda state, x: nnx.merge(graphdef, state)(x)), state


# ----------------------------------------------------------------------------------------------
# Equinox: channels-first modules of one sample, vmapped; running statistics closed over


def eqx_resnet18(torch_model, dtype=np.float64):
    import equinox as eqx

    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    key = jax.random.PRNGKey(0)

    class Block(eqx.Module):
        conv1: eqx.nn.Conv2d
        bn1: eqx.nn.BatchNorm
        conv2: eqx.nn.Conv2d
        bn2: eqx.nn.BatchNorm
        downsample: tuple | None

        def __init__(self, cin, features, stride, down):
            self.conv1 = eqx.nn.Conv2d(cin, features, 3, stride, 1, use_bias=False, key=key)
            self.bn1 = eqx.nn.BatchNorm(features, "batch", mode="ema", inference=True)
            self.conv2 = eqx.nn.Conv2d(features, features, 3, 1, 1, use_bias=False, key=key)
            self.bn2 = eqx.nn.BatchNorm(features, "batch", mode="ema", inference=True)
            self.downsample = None
            if down:
                self.downsample = (eqx.nn.Conv2d(cin, features, 1, stride, use_bias=False, key=key),
                                   eqx.nn.BatchNorm(features, "batch", mode="ema", inference=True))

        def __call__(self, x, state):
            y, state = self.bn1(self.conv1(x), state)
            y = jax.nn.relu(y)
            y, state = self.bn2(self.conv2(y), state)
            skip = x
            if self.downsample is not None:
                skip, state = self.downsample[1](self.downsample[0](x), state)
            return jax.nn.relu(y + skip), state

    class ResNet18(eqx.Module):
        conv1: eqx.nn.Conv2d
        bn1: eqx.nn.BatchNorm
        pool: eqx.nn.MaxPool2d
        layer1: list
        layer2: list
        layer3: list
        layer4: list
        fc: eqx.nn.Linear

        def __init__(self):
            self.conv1 = eqx.nn.Conv2d(3, 64, 7, 2, 3, use_bias=False, key=key)
            self.bn1 = eqx.nn.BatchNorm(64, "batch", mode="ema", inference=True)
            self.pool = eqx.nn.MaxPool2d(3, 2, 1)
            cin, stages = 64, []
            for i in range(4):
                blocks = []
                for j in range(2):
                    first = i > 0 and j == 0
                    blocks.append(Block(cin, STAGES[i], 2 if first else 1, first))
                    cin = STAGES[i]
                stages.append(blocks)
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.fc = eqx.nn.Linear(512, 1000, key=key)

        def __call__(self, x, state):
            x, state = self.bn1(self.conv1(x), state)
            x = self.pool(jax.nn.relu(x))
            for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in stage:
                    x, state = block(x, state)
            return self.fc(jnp.mean(x, axis=(1, 2))), state

    model, state = eqx.nn.make_with_state(ResNet18)()

    def load(model, path, name):
        return eqx.tree_at(lambda m: path(m).weight, model, jnp.asarray(_np(sd[f"{name}.weight"], dtype)))

    def set_bn(model, state, path, name):
        m = path(model)
        model = eqx.tree_at(lambda t: (path(t).weight, path(t).bias), model,
                            (jnp.asarray(_np(sd[f"{name}.weight"], dtype)), jnp.asarray(_np(sd[f"{name}.bias"], dtype))))
        state = state.set(m.ema_state_index, (jnp.asarray(_np(sd[f"{name}.running_mean"], dtype)),
                                              jnp.asarray(_np(sd[f"{name}.running_var"], dtype))))
        return model, state

    model = load(model, lambda m: m.conv1, "conv1")
    model, state = set_bn(model, state, lambda m: m.bn1, "bn1")
    for i, j, _, down in _blocks():
        src = f"layer{i + 1}.{j}"
        blk = lambda m, i=i, j=j: getattr(m, f"layer{i + 1}")[j]  # noqa: E731
        model = load(model, lambda m, b=blk: b(m).conv1, f"{src}.conv1")
        model, state = set_bn(model, state, lambda m, b=blk: b(m).bn1, f"{src}.bn1")
        model = load(model, lambda m, b=blk: b(m).conv2, f"{src}.conv2")
        model, state = set_bn(model, state, lambda m, b=blk: b(m).bn2, f"{src}.bn2")
        if down:
            model = load(model, lambda m, b=blk: b(m).downsample[0], f"{src}.downsample.0")
            model, state = set_bn(model, state, lambda m, b=blk: b(m).downsample[1], f"{src}.downsample.1")
    model = eqx.tree_at(lambda m: (m.fc.weight, m.fc.bias), model,
                        (jnp.asarray(_np(sd["fc.weight"], dtype)), jnp.asarray(_np(sd["fc.bias"], dtype))))
    params, static = eqx.partition(model, eqx.is_array)

    def fn(params, x):
        net = eqx.combine(params, static)
        return jax.vmap(lambda xi: net(xi, state)[0], axis_name="batch")(jnp.transpose(x, (0, 3, 1, 2)))

    return fn, params


def eqx_vgg16(torch_model, dtype=np.float64):
    import equinox as eqx

    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    key = jax.random.PRNGKey(0)

    class VGG16(eqx.Module):
        convs: list
        fcs: list

        def __init__(self):
            convs, cin = [], 3
            for v in VGG16_CFG:
                if v != "M":
                    convs.append(eqx.nn.Conv2d(cin, v, 3, padding=1, key=key))
                    cin = v
            self.convs = convs
            self.fcs = [eqx.nn.Linear(25088, 4096, key=key), eqx.nn.Linear(4096, 4096, key=key),
                        eqx.nn.Linear(4096, 1000, key=key)]

        def __call__(self, x):
            k = 0
            for v in VGG16_CFG:
                if v == "M":
                    x = eqx.nn.MaxPool2d(2, 2)(x)
                else:
                    x = jax.nn.relu(self.convs[k](x))
                    k += 1
            x = jnp.ravel(x)
            x = jax.nn.relu(self.fcs[0](x))
            x = jax.nn.relu(self.fcs[1](x))
            return self.fcs[2](x)

    model = VGG16()
    arr = lambda k: jnp.asarray(_np(sd[k], dtype))  # noqa: E731
    for k, i in enumerate(_features_indices()):
        model = eqx.tree_at(lambda m, k=k: (m.convs[k].weight, m.convs[k].bias), model,
                            (arr(f"features.{i}.weight"), arr(f"features.{i}.bias").reshape(-1, 1, 1)))
    for k, i in enumerate((0, 3, 6)):
        model = eqx.tree_at(lambda m, k=k: (m.fcs[k].weight, m.fcs[k].bias), model,
                            (arr(f"classifier.{i}.weight"), arr(f"classifier.{i}.bias")))
    params, static = eqx.partition(model, eqx.is_array)

    def fn(params, x):
        return jax.vmap(eqx.combine(params, static))(jnp.transpose(x, (0, 3, 1, 2)))

    return fn, params


# ----------------------------------------------------------------------------------------------
# a plain function of a parameter dict


def _conv(x, w, stride=1, pad=0):
    return lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _batchnorm(x, p):
    return (x - p["mean"]) * (lax.rsqrt(p["var"] + EPS) * p["scale"]) + p["bias"]


def _allow_rank_promotion(fn):
    """Plain functions broadcast ``(N, H, W, C) + (C,)`` as users write them; the test suite
    otherwise raises on rank promotion."""

    def wrapped(p, x):
        with jax.numpy_rank_promotion("allow"):
            return fn(p, x)

    return wrapped


@_allow_rank_promotion
def plain_resnet18_fn(p, x):
    x = jax.nn.relu(_batchnorm(_conv(x, p["conv1"]["w"], 2, 3), p["bn1"]))
    x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
    for i, j, s, down in _blocks():
        b = p[f"layer{i + 1}"][str(j)]
        y = jax.nn.relu(_batchnorm(_conv(x, b["conv1"]["w"], s, 1), b["bn1"]))
        y = _batchnorm(_conv(y, b["conv2"]["w"], 1, 1), b["bn2"])
        if down:
            x = _batchnorm(_conv(x, b["downsample"]["conv"]["w"], s, 0), b["downsample"]["bn"])
        x = jax.nn.relu(y + x)
    x = jnp.mean(x, axis=(1, 2))
    return x @ p["fc"]["w"] + p["fc"]["b"]


def plain_resnet18(zoo):
    def bn(name):
        pp, ss = _bn(zoo, name)
        return {**pp, **ss}

    w = lambda name: {"w": _get(zoo["params"], name)["kernel"]}  # noqa: E731
    p = {"conv1": w("conv1"), "bn1": bn("bn1"), "fc": {"w": zoo["params"]["fc"]["kernel"], "b": zoo["params"]["fc"]["bias"]}}
    for i, j, _, down in _blocks():
        src = f"layer{i + 1}.{j}"
        blk = {"conv1": w(f"{src}.conv1"), "bn1": bn(f"{src}.bn1"), "conv2": w(f"{src}.conv2"), "bn2": bn(f"{src}.bn2")}
        if down:
            blk["downsample"] = {"conv": w(f"{src}.downsample.0"), "bn": bn(f"{src}.downsample.1")}
        p.setdefault(f"layer{i + 1}", {})[str(j)] = blk
    return plain_resnet18_fn, p


@_allow_rank_promotion
def plain_vgg16_fn(p, x):
    k = 0
    for v in VGG16_CFG:
        if v == "M":
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        else:
            c = p["features"][k]
            x = jnp.maximum(_conv(x, c["w"], 1, 1) + c["b"], 0)
            k += 1
    x = x.reshape(x.shape[0], -1)
    for c in p["classifier"][:2]:
        x = jnp.maximum(x @ c["w"] + c["b"], 0)
    c = p["classifier"][2]
    return x @ c["w"] + c["b"]


def plain_vgg16(zoo):
    f, cl = zoo["params"]["features"], zoo["params"]["classifier"]
    p = {"features": [{"w": f[str(i)]["kernel"], "b": f[str(i)]["bias"]} for i in _features_indices()],
         "classifier": [{"w": cl[str(i)]["kernel"], "b": cl[str(i)]["bias"]} for i in (0, 3, 6)]}
    return plain_vgg16_fn, p
