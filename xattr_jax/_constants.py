"""Constants used in more than one module, each defined here once (no imports: any module may use them)."""

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EMBEDDED", "EMBEDDED_SIZE", "POINTING_TOLERANCE", "BOX_THRESHOLD"]

#: torchvision's ImageNet statistics (RGB), the normalisation every zoo model and shipped model expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The shipped ("embedded") synthetic-benchmark models, and the input side they were trained at.
EMBEDDED = ("small_vgg", "small_resnet")
EMBEDDED_SIZE = 64

#: The pointing game's hit radius in pixels, at ~224 px images (Zhang et al. 2016).
POINTING_TOLERANCE = 15
#: Grad-CAM's box threshold: a fraction of the map's maximum (Selvaraju et al. 2017).
BOX_THRESHOLD = 0.15
