"""``xattr explain IMAGE --out FIGURE``: one image file, one or more methods, one figure.

Preprocessing (``--preprocess``, :mod:`xattr_jax.data.preprocess`): ``auto`` takes ``embedded``
(the whole image resized to 64×64) for the shipped models and ``imagenet`` (TorchRay: shorter side
224, aspect kept) for others; ``torchvision`` is resize 256 + centre crop 224. Then ImageNet's mean
and std. Images are read with Pillow (8/16-bit, grey, palette, alpha composited over white).

The figure (:mod:`xattr_jax.viz`) shows the image and its map over a grey copy of it, signed maps on
a diverging colour map centred at 0, unsigned ones on a sequential map, both with a colour bar,
titled with the method, the model, the class name and its probability; several methods give one
row each. The format comes from ``--out``'s extension (PNG, JPEG, PDF, SVG). The target defaults to
the top-1 class; the top-k predictions are reported with names and probabilities.

Example:
  xattr explain cat.jpg --checkpoint resnet50_ckpt --method grad_cam,lrp --out cat.pdf
  xattr explain shapes.png --checkpoint embedded:small_vgg --method excitation_backprop --out eb.png
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np

import xattr_jax as xa
from xattr_jax import viz
from xattr_jax.app.cli_common import load_model
from xattr_jax.data.labels import class_names_for
from xattr_jax.data.preprocess import default_preprocess
from xattr_jax.data.preprocess import preprocess as prep

__all__ = ["explain_image"]


def explain_image(
    image_path,
    checkpoint: str,
    methods: Sequence[str],
    out,
    *,
    target: Optional[int] = None,
    top_k: int = 1,
    report: int = 5,
    preprocess: str = "auto",
    options: Optional[dict] = None,
    progress: bool = False,
) -> dict:
    """Explain one image file with each of ``methods`` and write one figure to ``out``.

    The classes explained are ``target``, or else the ``top_k`` most probable ones; one panel per
    (method, class). ``report`` predictions are returned with names and probabilities.

    Returns:
      what was done: ``arch``, ``preprocess``, ``input_size``, ``top`` (``[(class, name, prob)]``),
      ``targets``, ``maps`` (``{method: shape}``), ``warnings``, ``out``.

    Raises:
      FileNotFoundError, ValueError (unreadable image, bad checkpoint, method, option, layer or
      target, an output path that is a folder or has an unknown extension),
      :class:`~xattr_jax.app.cli_common.UsageError` (a checkpoint that cannot be loaded).
    """
    import jax
    import jax.numpy as jnp

    from xattr_jax.harness.progress import progress_bar
    from xattr_jax.program import call_model

    image = viz.read_image(image_path)
    model, variables, arch = load_model(checkpoint)
    mode = default_preprocess(arch) if preprocess == "auto" else preprocess
    x, resized = prep(image, mode)
    logits = np.asarray(call_model(model)(variables, jnp.asarray(x[None])))[0]
    n = logits.shape[-1]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    names = class_names_for(arch, n)
    name = (lambda c: names[c]) if names else (lambda c: None)  # noqa: E731
    order = np.argsort(-logits, kind="stable")
    targets = [int(c) for c in order[: max(1, top_k)]] if target is None else [int(target)]
    if not all(0 <= t < n for t in targets):
        raise ValueError(f"target {target} is out of range: the model has {n} classes (0..{n - 1})")
    maps = {}
    xs = jnp.asarray(np.repeat(x[None], len(targets), axis=0))
    with progress_bar(len(methods), "methods", progress) as bar:
        for m in methods:
            bar.describe(f"{m} (compiling and running)")
            kw = dict((options or {}).get(m, {}))  # method options, layer and signal
            res = xa.explain(model, variables, xs, jnp.asarray(targets), method=m, key=jax.random.key(0), **kw)
            maps[m] = np.asarray(res.map)
            bar.advance(1)
        bar.describe("methods")
    labels = [name(t) if name(t) is not None else f"class {t}" for t in targets]
    scores = [float(probs[t]) for t in targets]  # softmax probabilities
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", viz.EmptyMapWarning)
        if len(methods) == 1 and len(targets) == 1:
            fig = viz.overlay_figure(resized, maps[methods[0]][0], method=methods[0], model=arch,
                                     class_name=labels[0], score=scores[0])  # fmt: skip
        else:
            fig = viz.grid_figure([resized] * len(targets), {m: list(v) for m, v in maps.items()},
                                  model=arch, class_names=labels, scores=scores,
                                  title=f"{', '.join(methods)} · {arch}")  # fmt: skip
    path = viz.save(fig, out)
    return {
        "image": str(image_path),
        "checkpoint": checkpoint,
        "arch": arch,
        "preprocess": mode,
        "input_size": tuple(int(v) for v in x.shape[:2]),
        "top": [(int(c), name(int(c)), float(probs[c])) for c in order[: max(report, 1)]],
        "targets": [(t, name(t), float(probs[t])) for t in targets],
        "maps": {m: tuple(int(v) for v in v.shape[1:]) for m, v in maps.items()},
        "warnings": [str(w.message) for w in caught if issubclass(w.category, viz.EmptyMapWarning)],
        "out": str(path),
    }
