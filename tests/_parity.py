"""Helpers shared by the peer-parity tests.

Ours runs in float32 (the library's working precision) against the peer in float64 on the same
weights and input: the converted weights and the test inputs hold float32 values exactly, so only the
arithmetic differs. Integrated gradients is the exception and runs float64 on both sides
(see ``tests/test_parity_captum.py``).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

TOL = 1e-4  # max abs error <= TOL x max|reference|

# The plain input gradient (gradient, input x gradient) of ours in float32 cannot be held to TOL against
# the float64 peer: ReLU pre-activations within float32 rounding of 0 land on the other side of the kink
# (on ``image_batch``, three of them on one machine: VGG16 features.5 and features.14, ResNet50
# layer2.0.bn2), and which ones flip depends on the CPU's float32 convolution kernels. So those cases are
# checked in two parts, neither tuned to a machine:
#   * the algorithm: ours in float64 against the peer in float64 at TOL;
#   * the precision: ours in float32 against ``kinked_input_gradient``, the float64 input gradient of the
#     same model with every ReLU's mask taken from a float32 forward pass (whatever this machine's float32
#     rounding decides), at TOL. The reference is itself checked against the float64 peer with float64
#     masks, so it is an input gradient of the peer's model and nothing of ours.


def _is_relu(eqn):
    """``max(z, 0)`` with a literal 0: the body of ``jax.nn.relu``."""
    if eqn.primitive.name != "max":
        return False
    lits = [v for v in eqn.invars if isinstance(v, jcore.Literal)]
    return len(lits) == 1 and np.all(np.asarray(lits[0].val) == 0)


def _eval(jaxpr, consts, args, masks, record):
    """Evaluate ``jaxpr``; each ReLU records its mask (``record``) or applies the next given one."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, a in zip(jaxpr.constvars, consts):
        env[v] = a
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if _is_relu(eqn):
            z = ins[0] if not isinstance(eqn.invars[0], jcore.Literal) else ins[1]
            if record:
                masks.append(z > 0)
                outs = [jnp.maximum(z, 0)]
            else:
                outs = [z * jnp.asarray(masks.pop(0), z.dtype)]
        elif sub is not None and eqn.primitive.name in ("pjit", "jit", "closed_call", "custom_jvp_call"):
            outs = _eval(sub.jaxpr, sub.consts, ins, masks, record)
        else:
            outs = eqn.primitive.bind(*ins, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def kinked_input_gradient(model, variables, x, targets, mask_dtype):
    """Float64 gradient of ``logits[i, targets[i]]`` w.r.t. ``x`` with the ReLU masks of a ``mask_dtype``
    forward pass (``model.apply(variables, x)``; ``variables`` and ``x`` hold float32 values)."""
    apply = lambda v, xx: model.apply(v, xx)  # noqa: E731
    with jax.enable_x64(True):
        cast = lambda t, d: jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, d)), t)  # noqa: E731
        v_m, x_m = cast(variables, mask_dtype), cast(x, mask_dtype)
        closed = jax.make_jaxpr(apply)(v_m, x_m)

        @jax.jit  # the forward as the attributors run it: one compiled program
        def forward_masks(leaves):
            masks = []
            _eval(closed.jaxpr, closed.consts, leaves, masks, record=True)
            return masks

        masks = [np.asarray(m) for m in forward_masks(jax.tree_util.tree_leaves((v_m, x_m)))]
        assert masks, "no ReLU found in the model's program"
        v64, x64 = cast(variables, np.float64), cast(x, np.float64)
        closed = jax.make_jaxpr(apply)(v64, x64)
        leaves = jax.tree_util.tree_leaves(v64)
        n = len(masks)

        def logit(xx):
            used = list(masks)
            out = _eval(closed.jaxpr, closed.consts, leaves + [xx], used, record=False)[0]
            assert not used, f"{len(used)} of {n} ReLU masks left over: the two programs differ"
            return jnp.sum(out[jnp.arange(out.shape[0]), jnp.asarray(targets)])

        return np.asarray(jax.grad(logit)(x64))


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
