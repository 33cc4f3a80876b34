"""Helpers shared by the peer-parity tests.

Ours runs in float32 (the library's working precision) against the peer in float64 on the same
weights and input: the converted weights and the test inputs hold float32 values exactly, so only the
arithmetic differs. Integrated gradients is the exception and runs float64 on both sides
(see ``tests/test_parity_captum.py``).
"""

import jax
import jax.numpy as jnp
import numpy as np

TOL = 1e-4  # max abs error <= TOL x max|reference|

# The plain input gradient (gradient, input x gradient; Captum and TorchRay) of ``image_batch`` in
# float32 is off the float64 peer by more than TOL, and the cause is measured: our float32 forward puts
# three ReLU pre-activations on the other side of 0 from float64, each within the float32 rounding of
# its layer (ours float32 vs ours float64, same weights and input):
#   VGG16 features.5, sample 0: z64 = -2.4e-8, z32 = +5.2e-8 (layer's max |z32 - z64| 1.3e-6, max |z| 1.6)
#   VGG16 features.14, sample 1: z64 = +5.1e-8, z32 = -9.3e-9 (9.5e-7, max |z| 1.2)
#   ResNet50 layer2.0.bn2, sample 1: z64 = +6.3e-7, z32 = -1.1e-6 (1.1e-5, max |z| 9.8)
# The gradient passes through those units with ReLU derivative 0 instead of 1 (or back), which moves it
# by 4.0e-2 (VGG16) and 8.4e-3 (ResNet50) x max; ours in float64 equals the peer to 3e-15, and the
# float64 torch model with just those three pre-activations set to our float32 values equals our
# float32 gradient to 8.8e-7 (VGG16) and 1.3e-6 (ResNet50) x max. PyTorch's own float32 gradient of
# the same batch is 9.4e-4 (VGG16) and 1.3e-2 (ResNet50) x max off its float64 one. On four other
# seeded draws per net, ours flipped one unit once (ResNet50, 3.0e-3) and was otherwise <= 1.6e-6 off.
# So those cases compare float32 at the measured bound below and also float64 on both sides at TOL;
# every other float32 case meets TOL.
KINK_TOL = {"vgg16": 5e-2, "resnet50": 1e-2}  # measured worst 4.0e-2 and 8.4e-3


def float32(tree):
    """Every array leaf of ``tree`` as a float32 JAX array (exact for the float32-valued fixtures)."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float32)), tree)


def nchw_to_nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def assert_close(ours, ref, what, tol=TOL, scale=None):
    """Max abs error <= ``tol`` x ``scale`` (default max|ref|); returns and prints the error / scale."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs reference {ref.shape}"
    scale = float(np.max(np.abs(ref))) if scale is None else scale
    assert scale > 0, f"{what}: the reference is all zeros, the comparison would be vacuous"
    err = float(np.max(np.abs(ours - ref)))
    print(f"parity {what}: max abs error / scale = {err / scale:.3g}")  # shown with pytest -s / -rP
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol} x max|reference| ({scale:.3g})"
    return err / scale
