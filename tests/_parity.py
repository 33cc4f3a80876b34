"""Helpers shared by the peer-parity tests."""

import numpy as np

TOL = 1e-4  # max abs error <= TOL x max|reference|


def nchw_to_nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def assert_close(ours, ref, what, tol=TOL, scale=None):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs reference {ref.shape}"
    scale = float(np.max(np.abs(ref))) if scale is None else scale
    assert scale > 0, f"{what}: the reference is all zeros, the comparison would be vacuous"
    err = float(np.max(np.abs(ours - ref)))
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol} x max|reference| ({scale:.3g})"
    return err / scale
