"""Compiled CPU kernels for the per-Gaussian half of 3DGS: projection to the image and SH colour.

Forward and hand-derived backward of exactly what :func:`rasterize.project` and :func:`rasterize.sh_colors`
compute in torch (gsplat's conventions); the tests check the gradients against those torch versions in
float64. Plain helper calls only: helpers inlined with ``inline='always'`` inside ``prange`` loops gave
wrong results in numba.

``error_model='numpy'``: a degenerate Gaussian (zero quaternion, centre on the camera plane) must give
inf/NaN that the culling tests reject, not a ZeroDivisionError out of a parallel loop (which numba
reports as an opaque SystemError and which ended a training run).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

EPS2D = 0.3
NEAR, FAR = 0.01, 1e10
ALPHA_MIN = 1.0 / 255.0
"""gsplat's ``ALPHA_THRESHOLD``: a Gaussian with a lower (effective) opacity draws nothing, and its radii are 0."""
MAX_EXTENT = 3.33
"""gsplat's widest box, in standard deviations (reached only at opacity ~1: see :func:`opacity_extent`)."""
NORM_EPS = 1e-12
"""Smallest length a quaternion or view direction is divided by (F.normalize's default eps)."""
SH_C1 = 0.48860251190292
SH_C2 = (1.092548430592079, 0.9461746957575601, 0.3153915652525201, 0.5462742152960395)
SH_C3 = (0.5900435899266435, 1.445305721320277, 2.285228997322329, 0.4570457994644658, 1.865881662950577,
         1.119528997770346)
SH_C0 = 0.28209479177387814


@njit(cache=True, error_model="numpy")
def sh_basis(x: float, y: float, z: float, degree: int, out: np.ndarray) -> None:
    out[0] = SH_C0
    if degree < 1:
        return
    out[1] = -SH_C1 * y
    out[2] = SH_C1 * z
    out[3] = -SH_C1 * x
    if degree < 2:
        return
    fc1 = x * x - y * y
    fs1 = 2 * x * y
    out[4] = SH_C2[3] * fs1
    out[5] = -SH_C2[0] * z * y
    out[6] = SH_C2[1] * z * z - SH_C2[2]
    out[7] = -SH_C2[0] * z * x
    out[8] = SH_C2[3] * fc1
    if degree < 3:
        return
    fc2 = x * fc1 - y * fs1
    fs2 = x * fs1 + y * fc1
    tmp_c = -SH_C3[2] * z * z + SH_C3[3]
    out[9] = -SH_C3[0] * fs2
    out[10] = SH_C3[1] * z * fs1
    out[11] = tmp_c * y
    out[12] = z * (SH_C3[4] * z * z - SH_C3[5])
    out[13] = tmp_c * x
    out[14] = SH_C3[1] * z * fc1
    out[15] = -SH_C3[0] * fc2


@njit(cache=True, error_model="numpy")
def sh_basis_grad(x: float, y: float, z: float, degree: int, vb: np.ndarray) -> tuple[float, float, float]:
    """Gradient wrt (x, y, z) of sum_k vb[k] * basis_k(x, y, z)."""
    gx = 0.0
    gy = 0.0
    gz = 0.0
    if degree >= 1:
        gx += -SH_C1 * vb[3]
        gy += -SH_C1 * vb[1]
        gz += SH_C1 * vb[2]
    if degree >= 2:
        gx += SH_C2[3] * 2 * y * vb[4] - SH_C2[0] * z * vb[7] + SH_C2[3] * 2 * x * vb[8]
        gy += SH_C2[3] * 2 * x * vb[4] - SH_C2[0] * z * vb[5] - SH_C2[3] * 2 * y * vb[8]
        gz += -SH_C2[0] * y * vb[5] + 2 * SH_C2[1] * z * vb[6] - SH_C2[0] * x * vb[7]
    if degree >= 3:
        tmp_c = -SH_C3[2] * z * z + SH_C3[3]
        fc1 = x * x - y * y
        gx += (-SH_C3[0] * 6 * x * y * vb[9] + SH_C3[1] * 2 * y * z * vb[10] + tmp_c * vb[13]
               + SH_C3[1] * 2 * x * z * vb[14] - SH_C3[0] * (3 * x * x - 3 * y * y) * vb[15])
        gy += (-SH_C3[0] * (3 * x * x - 3 * y * y) * vb[9] + SH_C3[1] * 2 * x * z * vb[10] + tmp_c * vb[11]
               - SH_C3[1] * 2 * y * z * vb[14] + SH_C3[0] * 6 * x * y * vb[15])
        gz += (SH_C3[1] * 2 * x * y * vb[10] - 2 * SH_C3[2] * z * y * vb[11]
               + (3 * SH_C3[4] * z * z - SH_C3[5]) * vb[12] - 2 * SH_C3[2] * z * x * vb[13] + SH_C3[1] * fc1 * vb[14])
    return gx, gy, gz


@njit(cache=True, error_model="numpy")
def opacity_extent(opacity: float) -> float:
    """Half-size of a Gaussian's box in standard deviations, as gsplat 1.5.3 computes it (its opacity-aware
    bound, ``ProjectionEWA3DGSFused.cu``): ``min(3.33, sqrt(2 log(opacity * 255)))``, the distance at which
    ``opacity * exp(-d^2 / 2)`` falls to 1/255; 0 (no box: radii 0) below that opacity, and for NaN."""
    if not opacity >= ALPHA_MIN:
        return 0.0
    return min(MAX_EXTENT, np.sqrt(2.0 * np.log(opacity / ALPHA_MIN)))


@njit(cache=True, error_model="numpy")
def rotmat(w: float, x: float, y: float, z: float) -> tuple:
    return (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y))


@njit(cache=True, error_model="numpy")
def mm(A: tuple, B: tuple) -> tuple:
    """3x3 product, matrices as row-major 9-tuples (no allocation inside the parallel loops)."""
    return (A[0] * B[0] + A[1] * B[3] + A[2] * B[6], A[0] * B[1] + A[1] * B[4] + A[2] * B[7],
            A[0] * B[2] + A[1] * B[5] + A[2] * B[8],
            A[3] * B[0] + A[4] * B[3] + A[5] * B[6], A[3] * B[1] + A[4] * B[4] + A[5] * B[7],
            A[3] * B[2] + A[4] * B[5] + A[5] * B[8],
            A[6] * B[0] + A[7] * B[3] + A[8] * B[6], A[6] * B[1] + A[7] * B[4] + A[8] * B[7],
            A[6] * B[2] + A[7] * B[5] + A[8] * B[8])


@njit(cache=True, error_model="numpy")
def tr(A: tuple) -> tuple:
    return (A[0], A[3], A[6], A[1], A[4], A[7], A[2], A[5], A[8])


@njit(cache=True, error_model="numpy")
def camera_consts(view: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple:
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    tan_x = 0.5 * width / fx
    tan_y = 0.5 * height / fy
    lims = ((width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x, (height - cy) / fy + 0.3 * tan_y,
            cy / fy + 0.3 * tan_y)
    V = (float(view[0, 0]), float(view[0, 1]), float(view[0, 2]), float(view[1, 0]), float(view[1, 1]),
         float(view[1, 2]), float(view[2, 0]), float(view[2, 1]), float(view[2, 2]))
    t = (float(view[0, 3]), float(view[1, 3]), float(view[2, 3]))
    campos = (-(V[0] * t[0] + V[3] * t[1] + V[6] * t[2]), -(V[1] * t[0] + V[4] * t[1] + V[7] * t[2]),
              -(V[2] * t[0] + V[5] * t[1] + V[8] * t[2]))
    return fx, fy, cx, cy, lims, V, t, campos


@njit(cache=True, error_model="numpy")
def camera_point(means: np.ndarray, i: int, V: tuple, t: tuple) -> tuple[float, float, float]:
    """Gaussian ``i``'s mean in camera space (the one place it is computed, so every caller gets the same bits)."""
    mx, my, mz = float(means[i, 0]), float(means[i, 1]), float(means[i, 2])
    return (V[0] * mx + V[1] * my + V[2] * mz + t[0], V[3] * mx + V[4] * my + V[5] * mz + t[1],
            V[6] * mx + V[7] * my + V[8] * mz + t[2])


@njit(cache=True, error_model="numpy")
def gaussian_geometry(means: np.ndarray, quats: np.ndarray, scales: np.ndarray, i: int, V: tuple, t: tuple,
                      fx: float, fy: float, lims: tuple) -> tuple:
    """Camera-space mean and ``1 / z``, ``1 / |q|`` and the normalised quaternion, rotation, R_g S, camera
    covariance, clamped tx/ty, J, 2D cov."""
    x, y, z = camera_point(means, i, V, t)
    qw, qx, qy, qz = float(quats[i, 0]), float(quats[i, 1]), float(quats[i, 2]), float(quats[i, 3])
    qnorm = max(np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), NORM_EPS)  # as torch's F.normalize
    iq = 1.0 / qnorm
    qn = (qw * iq, qx * iq, qy * iq, qz * iq)
    Rg = rotmat(qn[0], qn[1], qn[2], qn[3])
    s0, s1, s2 = float(scales[i, 0]), float(scales[i, 1]), float(scales[i, 2])
    Mg = (Rg[0] * s0, Rg[1] * s1, Rg[2] * s2, Rg[3] * s0, Rg[4] * s1, Rg[5] * s2, Rg[6] * s0, Rg[7] * s1,
          Rg[8] * s2)
    cov = mm(mm(V, mm(Mg, tr(Mg))), tr(V))
    iz = 1.0 / z
    ux = x * iz
    uy = y * iz
    tx = z * min(lims[0], max(-lims[1], ux))
    ty = z * min(lims[2], max(-lims[3], uy))
    free_x = -lims[1] <= ux <= lims[0]
    free_y = -lims[3] <= uy <= lims[2]
    j00, j02, j11, j12 = fx * iz, -fx * tx * (iz * iz), fy * iz, -fy * ty * (iz * iz)
    # JC = J @ cov (2x3); c2 = JC @ J^T
    jc0 = (j00 * cov[0] + j02 * cov[6], j00 * cov[1] + j02 * cov[7], j00 * cov[2] + j02 * cov[8])
    jc1 = (j11 * cov[3] + j12 * cov[6], j11 * cov[4] + j12 * cov[7], j11 * cov[5] + j12 * cov[8])
    c00 = jc0[0] * j00 + jc0[2] * j02
    c01 = jc0[1] * j11 + jc0[2] * j12
    c10 = jc1[0] * j00 + jc1[2] * j02
    c11 = jc1[1] * j11 + jc1[2] * j12
    return (x, y, z, iz, iq, qn, Rg, (s0, s1, s2), Mg, cov, tx, ty, free_x, free_y, (j00, j02, j11, j12),
            (c00 + EPS2D, 0.5 * (c01 + c10), c11 + EPS2D))


@njit(cache=True, error_model="numpy")
def surely_outside(x: float, y: float, z: float, iz: float, u: float, v: float, s_max: float, fx: float,
                   fy: float, lims: tuple, width: int, height: int) -> bool:
    """True when the Gaussian at camera-space ``(x, y, z)`` (pixel ``(u, v)``) with largest scale ``s_max``
    gets zero radii for certain, from its mean alone (no rotation, covariance or colour).

    The 2D covariance's diagonal is ``r Σ r^T + EPS2D`` for the rows ``r`` of the Jacobian, and
    ``r Σ r^T <= |r|^2 s_max^2`` (Σ's largest eigenvalue is ``s_max^2``), so ``3.33 sqrt(...)`` bounds
    each radius before its ``ceil`` (3.33: the widest :func:`opacity_extent`); a little slack covers
    rounding. In an aerial view most of a scene is off screen, and those Gaussians skip the rest of the
    projection.
    """
    if not (z > NEAR and z < FAR):
        return True
    tx = z * min(lims[0], max(-lims[1], x * iz))
    ty = z * min(lims[2], max(-lims[3], y * iz))
    j00, j02, j11, j12 = fx * iz, -fx * tx * (iz * iz), fy * iz, -fy * ty * (iz * iz)
    s2 = s_max * s_max * (1.0 + 1e-5)
    rx = 3.33 * np.sqrt((j00 * j00 + j02 * j02) * s2 + EPS2D * (1.0 + 1e-5)) + 1.0
    ry = 3.33 * np.sqrt((j11 * j11 + j12 * j12) * s2 + EPS2D * (1.0 + 1e-5)) + 1.0
    return u + rx <= 0 or u - rx >= width or v + ry <= 0 or v - ry >= height


CHUNK = 1024


@njit(parallel=True, cache=True, error_model="numpy")
def project_forward(means: np.ndarray, quats: np.ndarray, scales: np.ndarray, sh: np.ndarray, degree: int,
                    view: np.ndarray, K: np.ndarray, width: int, height: int, opacities: np.ndarray,
                    antialiased: bool, means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray,
                    depths: np.ndarray, radii: np.ndarray) -> None:
    """Radii as gsplat's: the box of :func:`opacity_extent` standard deviations of the opacity (times the
    antialiased mode's compensation, as gsplat applies it before the test), 0 where that is under 1/255,
    off screen, behind the near plane or degenerate. DefaultStrategy counts a Gaussian visible by
    ``radii > 0``, so these decide what densification sees."""
    fx, fy, cx, cy, lims, V, t, campos = camera_consts(view, K, width, height)
    n = means.shape[0]
    n_bases = (degree + 1) ** 2
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        basis = np.empty(16)
        for i in range(chunk * CHUNK, min(n, chunk * CHUNK + CHUNK)):
            x, y, z = camera_point(means, i, V, t)
            iz = 1.0 / z
            u = fx * x * iz + cx
            v = fy * y * iz + cy
            means2d[i, 0] = u
            means2d[i, 1] = v
            depths[i] = z
            s_max = max(abs(float(scales[i, 0])), abs(float(scales[i, 1])), abs(float(scales[i, 2])))
            # the compensation is at most 1: under 1/255 before it is under 1/255 after it
            faint = not opacities[i] >= ALPHA_MIN
            if faint or surely_outside(x, y, z, iz, u, v, s_max, fx, fy, lims, width, height):
                radii[i, 0] = 0
                radii[i, 1] = 0
                for ch in range(3):
                    conics[i, ch] = 0.0
                    colors[i, ch] = 0.0
                continue
            geo = gaussian_geometry(means, quats, scales, i, V, t, fx, fy, lims)
            a, b, c = geo[15]
            det = a * c - b * b
            ok = det > 0 and z > NEAR and z < FAR
            idet = 1.0 / (det if det > 1e-10 else 1e-10)
            conics[i, 0] = c * idet
            conics[i, 1] = -b * idet
            conics[i, 2] = a * idet
            opacity = float(opacities[i])
            if antialiased and ok:  # gsplat's add_blur: sqrt(det(cov2d) / det(cov2d + 0.3 I)), floored at 0
                opacity *= np.sqrt(max(((a - EPS2D) * (c - EPS2D) - b * b) / det, 0.0))
            extent = opacity_extent(opacity)
            ok = ok and extent > 0.0
            rx = np.ceil(extent * np.sqrt(a)) if ok else 0.0
            ry = np.ceil(extent * np.sqrt(c)) if ok else 0.0
            inside = u + rx > 0 and u - rx < width and v + ry > 0 and v - ry < height
            radii[i, 0] = int(rx) if ok and inside else 0
            radii[i, 1] = int(ry) if ok and inside else 0
            dx = means[i, 0] - campos[0]
            dy = means[i, 1] - campos[1]
            dz = means[i, 2] - campos[2]
            inorm = 1.0 / max(np.sqrt(dx * dx + dy * dy + dz * dz), NORM_EPS)
            sh_basis(dx * inorm, dy * inorm, dz * inorm, degree, basis)
            for ch in range(3):
                acc = 0.5
                for k in range(n_bases):
                    acc += basis[k] * sh[i, k, ch]
                colors[i, ch] = max(acc, 0.0)


@njit(parallel=True, cache=True, error_model="numpy")
def project_backward(means: np.ndarray, quats: np.ndarray, scales: np.ndarray, sh: np.ndarray, degree: int,
                     view: np.ndarray, K: np.ndarray, width: int, height: int, radii: np.ndarray,
                     v_means2d: np.ndarray, v_conics: np.ndarray, v_colors: np.ndarray, v_means: np.ndarray,
                     v_quats: np.ndarray, v_scales: np.ndarray, v_sh: np.ndarray) -> None:
    """Gradients into ``v_*``, every row written (they may come uninitialised: zero-filling them
    beforehand cost ~1.4 ms a step at 100k Gaussians, mostly page faults on fresh memory, done serially).
    Culled Gaussians (``radii`` 0) get zeros and nothing else: nothing drew them, so their upstream
    gradients are zero, and in an aerial view that is most of the scene."""
    fx, fy, _, _, lims, V, t, campos = camera_consts(view, K, width, height)
    n = means.shape[0]
    n_bases = (degree + 1) ** 2
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        basis = np.empty(16)
        vb = np.empty(16)
        for i in range(chunk * CHUNK, min(n, chunk * CHUNK + CHUNK)):
            for j in range(3):
                v_means[i, j] = 0.0
                v_scales[i, j] = 0.0
            for j in range(4):
                v_quats[i, j] = 0.0
            for k in range(v_sh.shape[1]):
                for ch in range(3):
                    v_sh[i, k, ch] = 0.0
            if radii[i, 0] <= 0 or radii[i, 1] <= 0:
                continue
            # colour: v_sh, and the view direction's gradient to the mean
            ddx = means[i, 0] - campos[0]
            ddy = means[i, 1] - campos[1]
            ddz = means[i, 2] - campos[2]
            inorm = 1.0 / max(np.sqrt(ddx * ddx + ddy * ddy + ddz * ddz), NORM_EPS)
            d0, d1, d2 = ddx * inorm, ddy * inorm, ddz * inorm
            sh_basis(d0, d1, d2, degree, basis)
            vb[:] = 0.0
            for ch in range(3):
                raw = 0.5
                for k in range(n_bases):
                    raw += basis[k] * sh[i, k, ch]
                g = v_colors[i, ch] if raw >= 0 else 0.0  # clamp_min passes the gradient where raw >= 0
                for k in range(n_bases):
                    v_sh[i, k, ch] = basis[k] * g
                    vb[k] += sh[i, k, ch] * g
            gx, gy, gz = sh_basis_grad(d0, d1, d2, degree, vb)
            dot = gx * d0 + gy * d1 + gz * d2
            vm0 = (gx - d0 * dot) * inorm
            vm1 = (gy - d1 * dot) * inorm
            vm2 = (gz - d2 * dot) * inorm
            geo = gaussian_geometry(means, quats, scales, i, V, t, fx, fy, lims)
            x, y, _, iz, iq, qn, Rg, s, Mg, cov, tx, ty, free_x, free_y, jj, c2 = geo
            j00, j02, j11, j12 = jj
            a, b, c = c2
            det = a * c - b * b
            if det <= 1e-10:
                v_means[i, 0] = vm0
                v_means[i, 1] = vm1
                v_means[i, 2] = vm2
                continue
            # conic = inverse of [[a, b], [b, c]]
            qa, qb, qc = v_conics[i, 0], v_conics[i, 1], v_conics[i, 2]
            idet = 1.0 / det
            idd = idet * idet
            va = qa * (-c * c * idd) + qb * (b * c * idd) + qc * (idet - a * c * idd)
            vc = qa * (idet - a * c * idd) + qb * (a * b * idd) + qc * (-a * a * idd)
            vbb = 0.5 * (qa * (2 * b * c * idd) + qb * (-idet - 2 * b * b * idd) + qc * (2 * a * b * idd))
            # J = [[j00, 0, j02], [0, j11, j12]]; v_cov = J^T V2 J with V2 = [[va, vbb], [vbb, vc]]
            r0 = (va * j00, vbb * j11, va * j02 + vbb * j12)  # row 0 of V2 J
            r1 = (vbb * j00, vc * j11, vbb * j02 + vc * j12)  # row 1 of V2 J
            v_cov = (j00 * r0[0], j00 * r0[1], j00 * r0[2],
                     j11 * r1[0], j11 * r1[1], j11 * r1[2],
                     j02 * r0[0] + j12 * r1[0], j02 * r0[1] + j12 * r1[1], j02 * r0[2] + j12 * r1[2])
            # v_J = 2 (V2 J) cov
            vj00 = 2 * (r0[0] * cov[0] + r0[1] * cov[3] + r0[2] * cov[6])
            vj02 = 2 * (r0[0] * cov[2] + r0[1] * cov[5] + r0[2] * cov[8])
            vj11 = 2 * (r1[0] * cov[1] + r1[1] * cov[4] + r1[2] * cov[7])
            vj12 = 2 * (r1[0] * cov[2] + r1[1] * cov[5] + r1[2] * cov[8])
            v_cov_w = mm(mm(tr(V), v_cov), V)
            v_M = mm(v_cov_w, Mg)
            v_M = (2 * v_M[0], 2 * v_M[1], 2 * v_M[2], 2 * v_M[3], 2 * v_M[4], 2 * v_M[5], 2 * v_M[6], 2 * v_M[7],
                   2 * v_M[8])
            for j in range(3):
                v_scales[i, j] = v_M[j] * Rg[j] + v_M[3 + j] * Rg[3 + j] + v_M[6 + j] * Rg[6 + j]
            W = (v_M[0] * s[0], v_M[1] * s[1], v_M[2] * s[2], v_M[3] * s[0], v_M[4] * s[1], v_M[5] * s[2],
                 v_M[6] * s[0], v_M[7] * s[1], v_M[8] * s[2])
            w_, x_, y_, z_ = qn
            vq0 = 2 * (-z_ * W[1] + y_ * W[2] + z_ * W[3] - x_ * W[5] - y_ * W[6] + x_ * W[7])
            vq1 = 2 * (y_ * W[1] + z_ * W[2] + y_ * W[3] - 2 * x_ * W[4] - w_ * W[5] + z_ * W[6] + w_ * W[7]
                       - 2 * x_ * W[8])
            vq2 = 2 * (-2 * y_ * W[0] + x_ * W[1] + w_ * W[2] + x_ * W[3] + z_ * W[5] - w_ * W[6] + z_ * W[7]
                       - 2 * y_ * W[8])
            vq3 = 2 * (-2 * z_ * W[0] - w_ * W[1] + x_ * W[2] + w_ * W[3] - 2 * z_ * W[4] + y_ * W[5] + x_ * W[6]
                       + y_ * W[7])
            qdot = w_ * vq0 + x_ * vq1 + y_ * vq2 + z_ * vq3
            v_quats[i, 0] = (vq0 - w_ * qdot) * iq
            v_quats[i, 1] = (vq1 - x_ * qdot) * iq
            v_quats[i, 2] = (vq2 - y_ * qdot) * iq
            v_quats[i, 3] = (vq3 - z_ * qdot) * iq
            # the projected mean and J depend on the camera-space mean
            iz2 = iz * iz
            vx = v_means2d[i, 0] * fx * iz
            vy = v_means2d[i, 1] * fy * iz
            vz = -(v_means2d[i, 0] * fx * x + v_means2d[i, 1] * fy * y) * iz2
            vz += -vj00 * fx * iz2 - vj11 * fy * iz2
            vz += (vj02 * 2 * fx * tx + vj12 * 2 * fy * ty) * (iz2 * iz)
            v_tx = -vj02 * fx * iz2
            v_ty = -vj12 * fy * iz2
            if free_x:
                vx += v_tx
            else:
                vz += v_tx * tx * iz
            if free_y:
                vy += v_ty
            else:
                vz += v_ty * ty * iz
            v_means[i, 0] = vm0 + V[0] * vx + V[3] * vy + V[6] * vz
            v_means[i, 1] = vm1 + V[1] * vx + V[4] * vy + V[7] * vz
            v_means[i, 2] = vm2 + V[2] * vx + V[5] * vy + V[8] * vz
