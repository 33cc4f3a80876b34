"""LRP on a ViT against a float64 dense reference of the same rules (CP-LRP and AttnLRP).

The model is the test families' linen ViT (``nn.Conv`` patch embedding, class token, position
embedding, two pre-norm blocks of ``nn.LayerNorm``, ``nn.MultiHeadDotProductAttention`` and a GELU
MLP, a final LayerNorm and a dense head on the class token), as a Flax user writes it. The
reference below re-implements its forward in numpy float64 from the parameters alone and then
propagates relevance with each rule's textbook formula, every Jacobian written as a dense matrix:

- dense layers (q, k, v, out, MLP, head): LRP-ε, ``R_i = x_i Σ_j W_ij R_j / stab(z_j, ε)``, bias in z;
- the patch embedding (the first linear layer): flat (``epsilon_plus_flat``, the default) or z⁺
  (``epsilon_plus``) over its 4x4x3 receptive field;
- LayerNorm with σ constant: ``R_x = x ⊙ Jᵀ(R ⊘ stab(y))``, ``J = (I − 1/n) diag(γ)/σ`` (LXT);
- GELU: identity; residual sums: the proportional split ``R_a = a ⊙ R ⊘ stab(a + b)``;
- the position embedding (a constant added): relevance passes; the class token keeps its share;
- attention, ``attention="cp"`` (Ali et al. 2022): softmax output constant, ``A·V`` linear in V
  (R to V by ε), nothing through ``QKᵀ``; ``attention="attnlrp"`` (Achtibat et al. 2024): ``A·V``
  and ``QKᵀ`` by the uniform rule (each factor half of ``x_i J_iᵀ(R ⊘ stab(y))``) and the softmax
  by ``R_x = x ⊙ (R − s ΣR)`` (``J = diag(s) − s sᵀ``).

Ours runs in float32 as users run it; the reference in float64; <= 1e-4 x max.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xattr_jax as xa
from families import FAMILIES

TOL = 1e-4
EPS = 1e-6  # the presets' ε and stabiliser
HEADS, PATCH = 2, 4


def stab(z):
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def gelu(z):  # flax's nn.gelu: the tanh form
    return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))


def layer_norm(p, x):
    """Returns y and the dense Jacobian of y w.r.t. x with σ constant, per token: [T, n, n]."""
    n = x.shape[-1]
    sigma = np.sqrt(x.var(-1, keepdims=True) + 1e-6)  # flax's default epsilon
    y = (x - x.mean(-1, keepdims=True)) / sigma * p["scale"] + p["bias"]
    centre = np.eye(n) - 1.0 / n
    jac = centre[None] * (p["scale"][None, None] / sigma[:, :, None])  # [T, n_in, n_out]
    return y, jac


def dense_eps(x, w, z, r):
    """LRP-ε through ``z = x·W + b`` (W flattened to [n_in, n_out])."""
    xs, zs = x.reshape(x.shape[0], -1), z.reshape(z.shape[0], -1)
    wm = w.reshape(xs.shape[1], zs.shape[1])
    return (xs * ((r.reshape(zs.shape) / stab(zs)) @ wm.T)).reshape(x.shape)


def patches(img):  # [H, W, C] -> [tokens, 4*4*C] in the kernel's (kh, kw, c) order
    h, w, c = img.shape
    p = img.reshape(h // PATCH, PATCH, w // PATCH, PATCH, c).transpose(0, 2, 1, 3, 4)
    return p.reshape(-1, PATCH * PATCH * c)


def unpatch(p, shape):
    h, w, c = shape
    p = p.reshape(h // PATCH, w // PATCH, PATCH, PATCH, c).transpose(0, 2, 1, 3, 4)
    return p.reshape(h, w, c)


def forward(P, img):
    """One sample, float64; returns the logits and every value the backward pass reads."""
    s = {}
    pe = P["patch_embed"]
    s["patches"] = patches(img)
    kernel = pe["kernel"].reshape(-1, pe["kernel"].shape[-1])
    s["tok"] = s["patches"] @ kernel + pe["bias"]
    t = np.concatenate([P["cls"][0], s["tok"]], axis=0) + P["pos"][0]
    for i in range(2):
        b, a = P[f"blocks_{i}"], P[f"blocks_{i}"]["MultiHeadDotProductAttention_0"]
        blk = s[i] = {"t": t}
        blk["h"], blk["ln0"] = layer_norm(b["LayerNorm_0"], t)
        q, k, v = (np.einsum("tn,nhd->thd", blk["h"], a[m]["kernel"]) + a[m]["bias"] for m in ("query", "key", "value"))
        blk["query"], blk["key"], blk["value"] = q, k, v  # the dense layers' outputs
        blk["q"], blk["k"], blk["v"] = q / np.sqrt(q.shape[-1]), k, v  # the query scaled: no layer
        blk["logits"] = np.einsum("qhd,khd->hqk", blk["q"], k)
        e = np.exp(blk["logits"] - blk["logits"].max(-1, keepdims=True))
        blk["A"] = e / e.sum(-1, keepdims=True)
        blk["o"] = np.einsum("hqk,khd->qhd", blk["A"], v)
        blk["att"] = np.einsum("qhd,hdn->qn", blk["o"], a["out"]["kernel"]) + a["out"]["bias"]
        t2 = blk["t2"] = t + blk["att"]
        blk["h2"], blk["ln1"] = layer_norm(b["LayerNorm_1"], t2)
        blk["z1"] = blk["h2"] @ b["Dense_1"]["kernel"] + b["Dense_1"]["bias"]
        blk["m"] = gelu(blk["z1"])
        blk["mlp"] = blk["m"] @ b["Dense_0"]["kernel"] + b["Dense_0"]["bias"]
        t = t2 + blk["mlp"]
    s["t_final"] = t
    s["f"], s["lnf"] = layer_norm(P["LayerNorm_0"], t)
    s["logits"] = s["f"][0] @ P["head"]["kernel"] + P["head"]["bias"]
    return s


def norm_lrp(x, y, jac, r):
    return x * np.einsum("tin,tn->ti", jac, r / stab(y))


def split(a, b, r):
    return a * r / stab(a + b), b * r / stab(a + b)


def backward(P, s, img, target, attention, first):
    """Relevance at the input pixels [H, W, C] for the one-hot seed of ``target``."""
    head = P["head"]
    r = np.zeros_like(s["f"])
    seed = np.eye(len(s["logits"]))[target]
    r[0] = s["f"][0] * (head["kernel"] @ (seed / stab(s["logits"])))
    r = norm_lrp(s["t_final"], s["f"], s["lnf"], r)
    for i in reversed(range(2)):
        b, a, blk = P[f"blocks_{i}"], P[f"blocks_{i}"]["MultiHeadDotProductAttention_0"], s[i]
        r_t2, r_mlp = split(blk["t2"], blk["mlp"], r)
        r_m = dense_eps(blk["m"], b["Dense_0"]["kernel"], blk["mlp"], r_mlp)  # GELU: identity
        r_h2 = dense_eps(blk["h2"], b["Dense_1"]["kernel"], blk["z1"], r_m)
        r_t2 = r_t2 + norm_lrp(blk["t2"], blk["h2"], blk["ln1"], r_h2)
        r_t, r_att = split(blk["t"], blk["att"], r_t2)
        r_o = dense_eps(blk["o"], a["out"]["kernel"], blk["att"], r_att)
        # A·V: o[q,h,d] = Σ_k A[h,q,k] v[k,h,d]; g = R ⊘ stab(o)
        g = r_o / stab(blk["o"])
        share = 1.0 if attention == "cp" else 0.5
        r_v = share * blk["v"] * np.einsum("hqk,qhd->khd", blk["A"], g)
        r_q = r_k = 0.0
        if attention == "attnlrp":
            r_a = 0.5 * blk["A"] * np.einsum("khd,qhd->hqk", blk["v"], g)
            r_logits = blk["logits"] * (r_a - blk["A"] * r_a.sum(-1, keepdims=True))
            gl = r_logits / stab(blk["logits"])
            r_q = 0.5 * blk["q"] * np.einsum("khd,hqk->qhd", blk["k"], gl)
            r_k = 0.5 * blk["k"] * np.einsum("qhd,hqk->khd", blk["q"], gl)
        r_h = sum(dense_eps(blk["h"], a[m]["kernel"], blk[m], rr)
                  for m, rr in (("query", r_q), ("key", r_k), ("value", r_v)) if not np.isscalar(rr))
        r = r_t + norm_lrp(blk["t"], blk["h"], blk["ln0"], r_h)
    r_tok = r[1:]  # the position embedding passes; the class token's share stays there
    pe = P["patch_embed"]
    w = pe["kernel"].reshape(-1, pe["kernel"].shape[-1])
    x = s["patches"]
    if first == "flat":
        r_in = np.ones_like(x) * ((r_tok / stab(np.full_like(r_tok, x.shape[1]))) @ np.ones_like(w).T)
    else:  # z⁺: x⁺w⁺ + x⁻w⁻, the bias's positive part in the denominator
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        xp, xn = np.maximum(x, 0), np.minimum(x, 0)
        z = xp @ wp + xn @ wn + np.maximum(pe["bias"], 0)
        g = r_tok / stab(z)
        r_in = xp * (g @ wp.T) + xn * (g @ wn.T)
    return unpatch(r_in, img.shape)


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_plus"])
@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
def test_lrp_on_a_vit_equals_a_float64_dense_reference(attention, composite):
    model, v, x = FAMILIES["vit"]()
    targets = np.array([1, 3])
    P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v["params"])
    X = np.asarray(x, np.float64)
    refs = []
    for n in range(X.shape[0]):
        s = forward(P, X[n])
        ours_logits = np.asarray(model.apply(v, x[n:n + 1]))[0]
        err = np.max(np.abs(ours_logits - s["logits"]))
        assert err <= 1e-5 * np.max(np.abs(s["logits"])), f"the reference's forward is not the model's ({err:.2e})"
        refs.append(backward(P, s, X[n], targets[n], attention, "flat" if composite.endswith("flat") else "zplus"))
    ref = np.stack(refs).sum(-1)  # the map: Σ over channels
    res = xa.explain(model, v, x, jnp.asarray(targets), method="lrp", composite=composite, attention=attention)
    ours = np.asarray(res.relevance)
    ours = ours.sum(-1) if ours.ndim == 4 else ours
    scale = np.max(np.abs(ref))
    err = np.max(np.abs(ours - ref))
    print(f"LRP {composite} attention={attention} vs float64 dense reference: {err / scale:.2e} x max")
    assert scale > 0 and err <= TOL * scale, \
        f"LRP ({composite}, attention={attention}) off the float64 reference by {err / scale:.2e} x max (tol {TOL})"
