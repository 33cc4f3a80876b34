"""``xattr explain IMAGE``: one attribution map for one image file, written as a PNG overlay.

Input-size conventions (``--preprocess auto``):

* embedded checkpoints (``embedded:small_vgg``, ``embedded:small_resnet``, or a directory holding
  one of those architectures): the whole image resized to 64×64 (their training size);
* any other checkpoint (converted torchvision models): TorchRay's evaluation preprocessing,
  shorter side resized to 224 with the aspect ratio kept, no crop.

Both resize bilinearly (``align_corners=False``, no antialiasing) and normalise with ImageNet's
mean and std. PNG and PPM/PGM images are read without extra packages; JPEG and other formats need
Pillow (``pip install pillow``). The target defaults to the predicted (top-1) class.

The PNG shows the resized input and the map overlaid on it (the map resized bilinearly to the
input; jet colour map of the map's positive part over its maximum).

Example:
  xattr explain cat.png --checkpoint resnet50_ckpt --method grad_cam --layer layer4 --out cat_gc.png
  xattr explain shapes.png --checkpoint embedded:small_vgg --method excitation_backprop --out eb.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["explain_image", "class_names_for", "add_arguments", "run"]


def class_names_for(arch: str, num_classes: int) -> Optional[tuple[str, ...]]:
    """Class names when they are known: the synthetic classes, or VOC's for 20-class models."""
    from xattr_jax.data import CLASS_NAMES, VOC_CLASSES
    from xattr_jax.models import EMBEDDED

    if arch in EMBEDDED and num_classes == len(CLASS_NAMES):
        return tuple(CLASS_NAMES)
    if num_classes == len(VOC_CLASSES):
        return tuple(VOC_CLASSES)
    return None


def explain_image(
    image_path,
    checkpoint: str,
    method: str,
    out,
    *,
    target: Optional[int] = None,
    layer: Optional[str] = None,
    preprocess: str = "auto",
) -> dict:
    """Explain one image file and write ``out`` (PNG). Returns what was done (target, scores, ...).

    Raises:
      FileNotFoundError, ImportError (JPEG without Pillow), ValueError (bad checkpoint, method,
      layer or target).
    """
    import jax
    import jax.numpy as jnp

    import xattr_jax as xa
    from xattr_jax.data.preprocess import default_preprocess
    from xattr_jax.data.preprocess import preprocess as prep
    from xattr_jax.harness.cli_common import load_model
    from xattr_jax.harness.protocols import resize as _resize
    from xattr_jax.viz_overlay import overlay, read_image, tile, upscale, write_png

    image = read_image(image_path)
    model, variables, arch = load_model(checkpoint)
    mode = default_preprocess(arch) if preprocess == "auto" else preprocess
    x, resized = prep(image, mode)
    logits = np.asarray(model.apply(variables, jnp.asarray(x[None])))[0]
    n = logits.shape[-1]
    predicted = int(np.argmax(logits))
    tgt = predicted if target is None else int(target)
    if not 0 <= tgt < n:
        raise ValueError(f"target {tgt} is out of range: the model has {n} classes (0..{n - 1})")
    res = xa.explain(model, variables, jnp.asarray(x[None]), jnp.asarray([tgt]), method=method,
                     layer=layer, key=jax.random.key(0))  # fmt: skip
    m = _resize(np.asarray(res.map)[0], x.shape[:2])
    scale = max(1, 224 // max(x.shape[:2]))
    fig = tile([upscale(resized, scale), upscale(overlay(resized, m), scale)])
    path = write_png(out, fig)
    names = class_names_for(arch, n)
    return {
        "image": str(image_path),
        "checkpoint": checkpoint,
        "arch": arch,
        "preprocess": mode,
        "input_size": tuple(int(v) for v in x.shape[:2]),
        "method": method,
        "layer": layer,
        "predicted": predicted,
        "predicted_name": names[predicted] if names else None,
        "target": tgt,
        "target_name": names[tgt] if names else None,
        "target_logit": float(logits[tgt]),
        "map_shape": tuple(int(v) for v in np.shape(res.map)[1:]),
        "out": str(path),
    }


def add_arguments(p) -> None:
    """The ``xattr explain`` options."""
    p.add_argument("image", help="image file (PNG or PPM; JPEG and others need Pillow)")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory, or embedded:small_vgg / embedded:small_resnet")  # fmt: skip
    p.add_argument("--method", default="grad_cam", help="attribution method (default grad_cam)")
    p.add_argument("--target", type=int, default=None, help="class index (default: predicted)")
    p.add_argument("--layer", default=None, help="dotted layer name (default: the method's)")
    p.add_argument("--preprocess", choices=("auto", "embedded", "imagenet"), default="auto")
    p.add_argument("--out", required=True, help="PNG file to write")


def run(args) -> int:
    """Handler of ``xattr explain``."""
    try:
        info = explain_image(args.image, args.checkpoint, args.method, args.out, target=args.target,
                             layer=args.layer, preprocess=args.preprocess)  # fmt: skip
    except (FileNotFoundError, ImportError, ValueError, TypeError) as err:
        print(f"xattr explain: error: {err}", file=sys.stderr)
        return 1
    name = lambda k: f" ({info[k + '_name']})" if info[k + "_name"] else ""  # noqa: E731
    print(f"{Path(info['image']).name}: predicted class {info['predicted']}{name('predicted')}; "
          f"{info['method']} map for class {info['target']}{name('target')} "
          f"({info['map_shape'][0]}x{info['map_shape'][1]}, input {info['input_size'][0]}x"
          f"{info['input_size'][1]}) -> {info['out']}")  # fmt: skip
    return 0
