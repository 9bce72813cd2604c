"""Triton kernels of the SIFA operator (imported only by :mod:`sifa.ops.triton`, on first use).

Every kernel works on tiles of ``(BLOCK_P pixels, BLOCK_C channels)`` of one image. Tensors are
addressed by their strides, so any layout works without a copy; where the query, offset and
gradient planes are contiguous (``PLANES``, the usual case) a pixel's offset is its index,
which lets the compiler vectorise and coalesce those loads and stores. The key is best
channels-last (the wrapper makes it so), since each bilinear corner is then one contiguous
channel vector, and the key gradient is accumulated channels-last for the same reason. A
program holds the whole channel group (``BLOCK_C >= C/G``), since a tap's score needs every
channel before its value can be weighted. Arithmetic runs in ``ACC`` (float32, or float64
for float64 inputs).

Sampling follows :mod:`sifa.ops.reference`: tap ``n = i*k + j`` of pixel ``(h, w)`` reads the
key bilinearly at ``(h + (i - (k-1)/2) * dilation + dy_n, w + (j - (k-1)/2) * dilation + dx_n)``
and each corner outside the image contributes zero. Non-finite offsets propagate as through the
reference's ``grid_sample`` on CPU: a tap whose coordinate is NaN, +-Inf or so large that doubling
it overflows has a NaN sample in every channel and reads and writes no key pixel.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _pixel_offset(p, ph, pw, s_h, s_w, PLANES: tl.constexpr):
    """Where pixel ``p = (ph, pw)`` sits in a channel plane. ``PLANES``: every plane is
    contiguous, so the offset is ``p`` itself, which tells the compiler that neighbouring
    pixels are neighbours in memory (coalesced, vectorised loads and stores)."""
    if PLANES:
        return p
    else:
        return ph * s_h + pw * s_w


@triton.jit
def _tap_position(off_base, s_oc, s_oh, s_ow, p, ph, pw, pmask, H, W, dilation,
                  tap, KS: tl.constexpr, PLANES: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Top-left corner ``(y0, x0)`` and fractions ``(ly, lx)`` of tap ``tap`` per pixel."""
    pix = _pixel_offset(p, ph, pw, s_oh, s_ow, PLANES)
    dy = tl.load(off_base + (2 * tap) * s_oc + pix, mask=pmask, other=0.0)
    dx = tl.load(off_base + (2 * tap + 1) * s_oc + pix, mask=pmask, other=0.0)
    half: tl.constexpr = (KS - 1) // 2
    y = ph.to(ACC) + ((tap // KS - half) * dilation) + dy.to(ACC)
    x = pw.to(ACC) + ((tap % KS - half) * dilation) + dx.to(ACC)
    # As the reference's grid_sample, a tap whose coordinate or its normalised form
    # (2x + 1) / W - 1 is not finite (NaN, +-Inf, or doubling overflows) gets NaN fractions,
    # so NaN bilinear weights (a NaN sample, a NaN offset gradient), and all its corners
    # outside the image (no key pixel read or written). `poison` is 0 or NaN; adding it to
    # the fractions (rather than selecting NaN) keeps the deterministic backward from spilling.
    poison = (y + y) * 0.0 + (x + x) * 0.0
    finite = poison == 0.0
    y = tl.where(finite, y, -2.0)
    x = tl.where(finite, x, -2.0)
    # Outside [-1, size] every corner is outside the image; clamping keeps the integer
    # conversion in range for any offset without changing which corners are inside.
    y = tl.minimum(tl.maximum(y, -2.0), H + 1.0)
    x = tl.minimum(tl.maximum(x, -2.0), W + 1.0)
    y0 = tl.floor(y)
    x0 = tl.floor(x)
    ly = (y - y0) + poison
    lx = (x - x0) + poison
    return y0.to(tl.int32), x0.to(tl.int32), ly, lx


@triton.jit
def _corner(k_base, s_kc, s_kh, s_kw, chan, cmask, yc, xc, pmask, H, W, ACC: tl.constexpr):
    """Key values ``(BLOCK_C, BLOCK_P)`` at integer positions, zero outside the image."""
    inside = pmask & (yc >= 0) & (yc < H) & (xc >= 0) & (xc < W)
    ptrs = k_base + chan[None, :] * s_kc + (yc * s_kh + xc * s_kw)[:, None]
    return tl.load(ptrs, mask=cmask[None, :] & inside[:, None], other=0.0).to(ACC)


@triton.jit
def _sample(k_base, s_kc, s_kh, s_kw, chan, cmask, y0, x0, ly, lx, pmask, H, W,
            ACC: tl.constexpr):  # fmt: skip
    """The bilinear sample and its four corners, each ``(BLOCK_C, BLOCK_P)``."""
    v00 = _corner(k_base, s_kc, s_kh, s_kw, chan, cmask, y0, x0, pmask, H, W, ACC)
    v01 = _corner(k_base, s_kc, s_kh, s_kw, chan, cmask, y0, x0 + 1, pmask, H, W, ACC)
    v10 = _corner(k_base, s_kc, s_kh, s_kw, chan, cmask, y0 + 1, x0, pmask, H, W, ACC)
    v11 = _corner(k_base, s_kc, s_kh, s_kw, chan, cmask, y0 + 1, x0 + 1, pmask, H, W, ACC)
    hy = 1.0 - ly
    hx = 1.0 - lx
    value = (
        (hy * hx)[:, None] * v00
        + (hy * lx)[:, None] * v01
        + (ly * hx)[:, None] * v10
        + (ly * lx)[:, None] * v11
    )
    return value, v00, v01, v10, v11


@triton.jit
def _tap_value(k_base, s_kc, s_kh, s_kw, off_base, s_oc, s_oh, s_ow, chan, cmask, p, ph, pw,
               pmask, H, W, dilation, tap, KS: tl.constexpr, PLANES: tl.constexpr,
               ACC: tl.constexpr):  # fmt: skip
    """The bilinear sample ``(BLOCK_P, BLOCK_C)`` of tap ``tap``."""
    y0, x0, ly, lx = _tap_position(
        off_base, s_oc, s_oh, s_ow, p, ph, pw, pmask, H, W, dilation, tap, KS, PLANES, ACC
    )
    value, _, _, _, _ = _sample(k_base, s_kc, s_kh, s_kw, chan, cmask, y0, x0, ly, lx,
                                pmask, H, W, ACC)  # fmt: skip
    return value


@triton.jit
def _softmax_statistics(q, k_base, s_kc, s_kh, s_kw, off_base, s_oc, s_oh, s_ow, chan, cmask,
                        p, ph, pw, pmask, H, W, dilation, scale,
                        KS: tl.constexpr, PLANES: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_P: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Running maximum, normaliser and unnormalised output of the softmax over the taps
    (one pass, as in flash attention)."""
    top = tl.full([BLOCK_P], float("-inf"), ACC)
    total = tl.zeros([BLOCK_P], ACC)
    acc = tl.zeros([BLOCK_P, BLOCK_C], ACC)
    for tap in range(KS * KS):
        value = _tap_value(k_base, s_kc, s_kh, s_kw, off_base, s_oc, s_oh, s_ow, chan, cmask,
                           p, ph, pw, pmask, H, W, dilation, tap, KS, PLANES, ACC)  # fmt: skip
        score = tl.sum(q * value, axis=1) * scale
        new_top = tl.maximum(top, score)
        # A score of -Inf weighs 0, as in torch.softmax; while the running maximum is -Inf
        # too, exp(-Inf - -Inf) would be NaN.
        rescale = tl.where(top == new_top, 1.0, tl.exp(top - new_top))
        weight = tl.where(score == float("-inf"), 0.0, tl.exp(score - new_top))
        acc = acc * rescale[:, None] + weight[:, None] * value
        total = total * rescale + weight
        top = new_top
    return top, total, acc


@triton.jit
def forward_kernel(q_ptr, k_ptr, off_ptr, out_ptr, scale_ptr,
                   s_qb, s_qc, s_qh, s_qw, s_kb, s_kc, s_kh, s_kw,
                   s_ob, s_oc, s_oh, s_ow, s_yb, s_yc, s_yh, s_yw,
                   H, W, HW, CG, G, dilation,
                   KS: tl.constexpr, SOFTMAX: tl.constexpr, PLANES: tl.constexpr,
                   BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Grid ``(pixel blocks, B * G)``: one channel group of one image per program.
    ``PLANES``: query, offset and output have contiguous channel planes. ``HW = H * W`` comes
    as an argument so that Triton sees when it is a multiple of 16 (then the pixel mask is
    constant over aligned runs of pixels, and pixel-contiguous accesses are vectorised)."""
    pid_bg = tl.program_id(1)
    b = (pid_bg // G).to(tl.int64)
    g = pid_bg % G
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    ph = p // W
    pw = p % W
    lane = tl.arange(0, BLOCK_C)
    cmask = lane < CG
    chan = g * CG + lane
    tile_mask = cmask[None, :] & pmask[:, None]
    scale = tl.load(scale_ptr)

    q = tl.load(
        q_ptr
        + b * s_qb
        + chan[None, :] * s_qc
        + _pixel_offset(p, ph, pw, s_qh, s_qw, PLANES)[:, None],
        mask=tile_mask,
        other=0.0,
    ).to(ACC)
    k_base = k_ptr + b * s_kb
    off_base = off_ptr + b * s_ob
    if SOFTMAX:
        _, total, acc = _softmax_statistics(q, k_base, s_kc, s_kh, s_kw, off_base, s_oc, s_oh,
                                            s_ow, chan, cmask, p, ph, pw, pmask, H, W, dilation,
                                            scale, KS, PLANES, BLOCK_C, BLOCK_P, ACC)  # fmt: skip
        acc = acc / total[:, None]
    else:
        acc = tl.zeros([BLOCK_P, BLOCK_C], ACC)
        for tap in range(KS * KS):
            value = _tap_value(k_base, s_kc, s_kh, s_kw, off_base, s_oc, s_oh, s_ow, chan,
                               cmask, p, ph, pw, pmask, H, W, dilation, tap, KS, PLANES,
                               ACC)  # fmt: skip
            acc += (tl.sum(q * value, axis=1) * scale)[:, None] * value
    out = (
        out_ptr
        + b * s_yb
        + chan[None, :] * s_yc
        + _pixel_offset(p, ph, pw, s_yh, s_yw, PLANES)[:, None]
    )
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def _scatter_corner(gk_base, chan, cmask, yc, xc, weight, grad_value, pmask, H, W, C):
    inside = pmask & (yc >= 0) & (yc < H) & (xc >= 0) & (xc < W)
    ptrs = gk_base + chan[None, :] + ((yc * W + xc) * C)[:, None]
    # Relaxed: only the sum matters, and the kernel's end orders it before any reader. The
    # default (acquire-release) makes each add a round trip the thread waits for; relaxed adds
    # with unused results compile to fire-and-forget vector reductions (red.global.add.v4.f32).
    tl.atomic_add(
        ptrs, weight[:, None] * grad_value, mask=cmask[None, :] & inside[:, None], sem="relaxed"
    )


@triton.jit
def _record_corner(idx_base, w_base, corner: tl.constexpr, HW, p, yc, xc, weight, mask, H, W):
    """Deterministic mode: where a corner lands (-1 outside) and its bilinear weight."""
    inside = (yc >= 0) & (yc < H) & (xc >= 0) & (xc < W)
    tl.store(idx_base + corner * HW + p, tl.where(inside, yc * W + xc, -1), mask=mask)
    tl.store(w_base + corner * HW + p, weight, mask=mask)


@triton.jit
def backward_kernel(go_ptr, q_ptr, k_ptr, off_ptr, gq_ptr, gk_ptr, goff_ptr, scale_ptr,
                    attn_ptr, dlogit_ptr, idx_ptr, cw_ptr,
                    s_gb, s_gc, s_gh, s_gw, s_qb, s_qc, s_qh, s_qw, s_kb, s_kc, s_kh, s_kw,
                    s_ob, s_oc, s_oh, s_ow,
                    H, W, HW, CG, G, dilation,
                    KS: tl.constexpr, SOFTMAX: tl.constexpr, DETERMINISTIC: tl.constexpr,
                    PLANES: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                    ACC: tl.constexpr):  # fmt: skip
    """Grid ``(pixel blocks, B)``: every group of one image's pixels per program, so the
    offset gradient (shared by the groups) is summed without atomics.

    With ``z_n = scale * <q, v_n>``, ``a = z`` or ``softmax(z)`` and ``out = sum_n a_n v_n``:
    ``dL/dz_n = <g, v_n>`` or ``a_n (<g, v_n> - <g, out>)``; ``dL/dq = scale sum_n dL/dz_n v_n``;
    ``dL/dv_n = a_n g + scale dL/dz_n q``, spread over the four corners of the sample (the key
    gradient) and differentiated through the bilinear weights (the offset gradient).
    The key gradient (contiguous, ``ACC``) is accumulated with atomics; in ``DETERMINISTIC``
    mode the kernel stores ``a``, ``scale dL/dz`` and the corners instead, and
    :func:`gather_key_grad_kernel` sums them in a fixed order.
    """
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    ph = p // W
    pw = p % W
    lane = tl.arange(0, BLOCK_C)
    cmask = lane < CG
    tile_mask = cmask[None, :] & pmask[:, None]
    scale = tl.load(scale_ptr)
    k_base = k_ptr + b * s_kb
    off_base = off_ptr + b * s_ob
    goff_base = goff_ptr + b * (2 * KS * KS) * HW
    gk_base = gk_ptr + b * (G * CG) * HW
    idx_base = idx_ptr + b * (KS * KS * 4) * HW
    cw_base = cw_ptr + b * (KS * KS * 4) * HW

    for g in range(G):
        chan = g * CG + lane
        pix = _pixel_offset(p, ph, pw, s_qh, s_qw, PLANES)[:, None]
        q = tl.load(q_ptr + b * s_qb + chan[None, :] * s_qc + pix, mask=tile_mask, other=0.0)
        q = q.to(ACC)
        pix_g = _pixel_offset(p, ph, pw, s_gh, s_gw, PLANES)[:, None]
        go = tl.load(go_ptr + b * s_gb + chan[None, :] * s_gc + pix_g, mask=tile_mask, other=0.0)
        go = go.to(ACC)
        top = tl.zeros([BLOCK_P], ACC)
        total = tl.full([BLOCK_P], 1.0, ACC)
        grad_dot_out = tl.zeros([BLOCK_P], ACC)
        if SOFTMAX:
            top, total, acc = _softmax_statistics(q, k_base, s_kc, s_kh, s_kw, off_base, s_oc,
                                                  s_oh, s_ow, chan, cmask, p, ph, pw, pmask, H, W,
                                                  dilation, scale, KS, PLANES, BLOCK_C, BLOCK_P,
                                                  ACC)  # fmt: skip
            grad_dot_out = tl.sum(go * acc, axis=1) / total
        gq = tl.zeros([BLOCK_P, BLOCK_C], ACC)
        for tap in range(KS * KS):
            y0, x0, ly, lx = _tap_position(
                off_base, s_oc, s_oh, s_ow, p, ph, pw, pmask, H, W, dilation, tap, KS, PLANES, ACC
            )
            value, v00, v01, v10, v11 = _sample(k_base, s_kc, s_kh, s_kw, chan, cmask, y0, x0,
                                                ly, lx, pmask, H, W, ACC)  # fmt: skip
            score = tl.sum(q * value, axis=1) * scale
            grad_attn = tl.sum(go * value, axis=1)
            if SOFTMAX:
                attn = tl.exp(score - top) / total
                grad_logit = attn * (grad_attn - grad_dot_out) * scale
            else:
                attn = score
                grad_logit = grad_attn * scale
            gq += grad_logit[:, None] * value
            grad_value = attn[:, None] * go + grad_logit[:, None] * q

            hy = 1.0 - ly
            hx = 1.0 - lx
            d_dy = hx[:, None] * (v10 - v00) + lx[:, None] * (v11 - v01)
            d_dx = hy[:, None] * (v01 - v00) + ly[:, None] * (v11 - v10)
            # This program owns these pixels of the offset gradient: add the group's share.
            # As in the reference, a tap with no corner in the image gets sum_c 0 * dL/dv_c
            # (0, or NaN where dL/dv is), and a tap that is not finite NaN (its weights are).
            gy_ptr = goff_base + (2 * tap) * HW + p
            gx_ptr = goff_base + (2 * tap + 1) * HW + p
            gy = tl.load(gy_ptr, mask=pmask, other=0.0) + tl.sum(grad_value * d_dy, axis=1)
            gx = tl.load(gx_ptr, mask=pmask, other=0.0) + tl.sum(grad_value * d_dx, axis=1)
            tl.store(gy_ptr, gy, mask=pmask)
            tl.store(gx_ptr, gx, mask=pmask)

            if DETERMINISTIC:
                row = ((b * G + g) * (KS * KS) + tap) * HW + p
                tl.store(attn_ptr + row, attn, mask=pmask)
                tl.store(dlogit_ptr + row, grad_logit, mask=pmask)
                first = pmask & (g == 0)  # the corners are the same for every group
                ib = idx_base + tap * 4 * HW
                wb = cw_base + tap * 4 * HW
                _record_corner(ib, wb, 0, HW, p, y0, x0, hy * hx, first, H, W)
                _record_corner(ib, wb, 1, HW, p, y0, x0 + 1, hy * lx, first, H, W)
                _record_corner(ib, wb, 2, HW, p, y0 + 1, x0, ly * hx, first, H, W)
                _record_corner(ib, wb, 3, HW, p, y0 + 1, x0 + 1, ly * lx, first, H, W)
            else:
                _scatter_corner(gk_base, chan, cmask, y0, x0, hy * hx, grad_value, pmask,
                                H, W, G * CG)  # fmt: skip
                _scatter_corner(gk_base, chan, cmask, y0, x0 + 1, hy * lx, grad_value, pmask,
                                H, W, G * CG)  # fmt: skip
                _scatter_corner(gk_base, chan, cmask, y0 + 1, x0, ly * hx, grad_value, pmask,
                                H, W, G * CG)  # fmt: skip
                _scatter_corner(gk_base, chan, cmask, y0 + 1, x0 + 1, ly * lx, grad_value, pmask,
                                H, W, G * CG)  # fmt: skip

        gq_ptrs = gq_ptr + b * (G * CG) * HW + chan[None, :] * HW + p[:, None]
        tl.store(gq_ptrs, gq.to(gq_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def gather_key_grad_kernel(rowptr_ptr, order_ptr, cw_ptr, attn_ptr, dlogit_ptr, go_ptr, q_ptr,
                           gk_ptr, s_gb, s_gc, s_gh, s_gw, s_qb, s_qc, s_qh, s_qw,
                           H, W, C, CG, G, KK,
                           BLOCK_C: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Deterministic key gradient. Grid ``(B * H * W, channel blocks)``: each program owns one
    key pixel and sums, in sorted order, every corner that landed on it:
    ``weight * (a_n g + scale dL/dz_n q)`` at the query pixel the corner came from.

    ``order`` lists the entries of the ``(B, k*k, 4, H*W)`` corner arrays sorted by target
    pixel; ``rowptr[t] : rowptr[t + 1]`` are the entries of target ``t`` (over ``B * H * W``).
    """
    target = tl.program_id(0)
    HW = H * W
    b = (target // HW).to(tl.int64)
    chan = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chan < C
    group = chan // CG
    start = tl.load(rowptr_ptr + target)
    end = tl.load(rowptr_ptr + target + 1)
    acc = tl.zeros([BLOCK_C], ACC)
    for e in range(start, end):
        entry = tl.load(order_ptr + e)
        weight = tl.load(cw_ptr + entry).to(ACC)
        p = entry % HW
        tap = (entry // (4 * HW)) % KK
        row = ((b * G + group) * KK + tap) * HW + p
        attn = tl.load(attn_ptr + row, mask=cmask, other=0.0)
        grad_logit = tl.load(dlogit_ptr + row, mask=cmask, other=0.0)
        ph = p // W
        pw = p % W
        go = tl.load(go_ptr + b * s_gb + chan * s_gc + ph * s_gh + pw * s_gw, mask=cmask, other=0.0)
        q = tl.load(q_ptr + b * s_qb + chan * s_qc + ph * s_qh + pw * s_qw, mask=cmask, other=0.0)
        acc += weight * (attn * go.to(ACC) + grad_logit * q.to(ACC))
    tl.store(gk_ptr + b * C * HW + (target % HW) * C + chan, acc, mask=cmask)
