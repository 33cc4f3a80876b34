"""Constants used in more than one module, each defined here once (no imports: any module may use them)."""

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EMBEDDED", "EMBEDDED_SIZE"]

#: torchvision's ImageNet statistics (RGB), the normalisation every zoo model and shipped model expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The shipped ("embedded") synthetic-benchmark models, and the input side they were trained at.
EMBEDDED = ("small_vgg", "small_resnet")
EMBEDDED_SIZE = 64
