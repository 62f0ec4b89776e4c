"""The Mamba-2 (SSD, multi-head) mixer, with the parameter names and layout of mamba_ssm's ``Mamba2``
(and transformers' ``Mamba2Mixer``), so that checkpoints and weight-reuse tables carry over by name:

    in_proj   d_model -> [z (d_inner) | x (d_inner) | B (g*n) | C (g*n) | dt (nheads)]
              with g = ngroups, n = d_state, d_inner = expand * d_model, nheads = d_inner / headdim
    conv1d    depthwise causal conv over xBC (conv_dim = d_inner + 2*ngroups*d_state), SiLU after
    dt_bias, A_log, D   (nheads,)
    norm      gated RMSNorm: rmsnorm(y * silu(z)) per group of d_inner / ngroups channels
    out_proj  d_inner -> d_model

Two modes that agree numerically: ``forward`` (parallel, chunked scan) and ``step`` (one token,
constant-size state). The scan, step and conv ops come from the kernel registry (``ssd_scan``,
``ssd_step``, ``causal_conv1d``) unless given explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import CAUSAL_CONV1D, SSD_SCAN, SSD_STEP, get_kernel
from .norms import RMSNormGated


@dataclass
class Mamba2State:
    """Recurrent state of one mixer: constant size whatever the stream length."""

    conv: Tensor  # (b, conv_dim, d_conv): the last d_conv raw xBC inputs, oldest first
    ssm: Tensor  # (b, nheads, headdim, d_state), float32 whatever the model dtype


def causal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise causal conv over time in the time-major layout: x (b, l, c), weight (c, k) ->
    (b, l, c), equal to ``nn.Conv1d(c, c, k, groups=c, padding=k - 1)`` cut to the first l outputs.

    k fused multiply-adds into shifted slices of the output: on CPU several times faster than the
    depthwise Conv1d (which also needs two transposes), and accumulated in float32 for half inputs."""
    l, k = x.shape[1], weight.shape[-1]
    ct = torch.promote_types(x.dtype, torch.float32)
    # taps as contiguous rows (k, c): a strided column of (c, k) as the broadcast operand runs the
    # multiply-adds about 2x slower on CPU
    xf, w = x.to(ct), weight.to(ct).t().contiguous()
    # tap k - 1 reads step t itself, tap i reads step t - (k - 1 - i)
    out = xf * w[k - 1] if bias is None else torch.addcmul(bias.to(ct), xf, w[k - 1])
    for i in range(k - 1):
        shift = k - 1 - i
        if shift < l:
            out[:, shift:].addcmul_(xf[:, : l - shift], w[i])
    return out.to(x.dtype)


class Mamba2Mixer(nn.Module):
    """Mamba-2 mixer with mamba_ssm's defaults (gated norm after the gate, A ~ U[1, 16], D = 1, no
    projection biases, conv bias). ``kernels`` overrides the registry: ``{"ssd_scan": fn, ...}``."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 64,
        a_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, math.inf),
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        kernels: dict[str, Callable] | None = None,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        if self.d_inner % headdim:
            raise ValueError(f"headdim={headdim} must divide d_inner={self.d_inner}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups={ngroups} must divide nheads={self.nheads}")
        self.dt_limit = tuple(dt_limit)
        self.kernels = kernels  # optional {"ssd_scan": fn, "ssd_step": fn}, else the registry
        self.conv_dim = self.d_inner + 2 * ngroups * d_state

        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim,
            padding=d_conv - 1, bias=conv_bias,
        )  # weight (conv_dim, 1, d_conv); holds the parameters, applied by causal_depthwise_conv
        self.dt_bias = nn.Parameter(torch.empty(self.nheads))
        self.A_log = nn.Parameter(torch.empty(self.nheads))
        self.D = nn.Parameter(torch.empty(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # same convention as mamba_ssm: optimizers may skip these
        self.norm = RMSNormGated(self.d_inner, group_size=self.d_inner // ngroups, eps=norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self.reset_ssm_parameters(a_init_range, dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(self, a_init_range, dt_min, dt_max, dt_init_floor) -> None:
        """mamba_ssm's init: dt ~ logU[dt_min, dt_max] stored through the inverse softplus,
        A ~ U[a_init_range] stored as log, D = 1."""
        dt = torch.exp(
            torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log.copy_(torch.empty(self.nheads).uniform_(*a_init_range).log())
        self.D.fill_(1.0)

    # --- shared pieces -------------------------------------------------------------------------
    def _kernel(self, op: str, device: torch.device) -> Callable:
        return get_kernel(op, device.type, self.kernels)

    def _dt(self, dt_raw: Tensor) -> Tensor:
        """softplus(dt + dt_bias) in float32, clamped to dt_limit when one is set."""
        dt = F.softplus(dt_raw.float() + self.dt_bias.float())
        lo, hi = self.dt_limit
        if lo > 0.0 or hi != math.inf:
            dt = dt.clamp(min=lo, max=hi)
        return dt

    def _split_in_proj(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)  # z, xBC, dt

    def _split_xbc(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        gn = self.ngroups * self.d_state
        return xBC.split([self.d_inner, gn, gn], dim=-1)  # x, B, C

    # --- parallel mode -------------------------------------------------------------------------
    def _project(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """u (b, l, d_model) -> z, raw xBC (before the conv), x, B, C (after conv and SiLU), raw dt."""
        zxbcdt = self.in_proj(u)  # (b, l, d_in_proj)
        z, xBC_raw, dt_raw = self._split_in_proj(zxbcdt)  # (b,l,d_inner) (b,l,conv_dim) (b,l,h)
        conv_w = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
        conv = self._kernel(CAUSAL_CONV1D, u.device)  # causal_depthwise_conv on CPU
        xBC = conv(xBC_raw, conv_w, self.conv1d.bias)  # (b, l, conv_dim), a fresh tensor
        xBC = F.silu(xBC, inplace=not torch.is_grad_enabled())  # in place when nothing records it
        x, B, C = self._split_xbc(xBC)  # (b, l, d_inner) (b, l, g*n) (b, l, g*n)
        return z, xBC_raw, x, B, C, dt_raw

    def quantities(self, u: Tensor) -> dict[str, Tensor]:
        """What the scan is fed for input u (b, l, d_model): ``x`` (b, l, h, p), ``B``/``C``
        (b, l, g, n), ``dt`` (b, l, h) after softplus, ``A`` (h,) < 0, ``D`` (h,)."""
        b, l, _ = u.shape
        _, _, x, B, C, dt_raw = self._project(u)
        return {"x": x.reshape(b, l, self.nheads, self.headdim), "B": B.reshape(b, l, self.ngroups, self.d_state),
                "C": C.reshape(b, l, self.ngroups, self.d_state), "dt": self._dt(dt_raw),
                "A": -torch.exp(self.A_log.float()), "D": self.D}

    def materialize(self, u: Tensor, rows: slice | None = None) -> Tensor:
        """The mixer's sequence-mixing matrix per head, ``M`` (b, h, l, l) in float32, such that
        the scan's output is ``y[:, t, h] = sum_s M[:, h, t, s] x[:, s, h]`` (before the gated norm):

            M[t, s] = (C_t . B_s) dt_s exp(sum_{k=s+1..t} dt_k A)   for s <= t, 0 above the diagonal
                      + D on the diagonal.

        ``rows``: only those rows t (b, h, len(rows), l), so that a long sequence's matrix can be
        built (and compared) a block of rows at a time."""
        q = self.quantities(u)
        h, g, l = self.nheads, self.ngroups, u.shape[1]
        t = torch.arange(l, device=u.device)[rows if rows is not None else slice(None)]  # the rows kept
        B = q["B"].float().repeat_interleave(h // g, dim=2)  # (b, l, h, n): head h reads group h // (h/g)
        C = q["C"].float().repeat_interleave(h // g, dim=2)[:, t]  # (b, r, h, n)
        dt, A = q["dt"].float(), q["A"].float()  # (b, l, h), (h,)
        cum = torch.cumsum(dt * A, dim=1).transpose(1, 2)  # (b, h, l): sum_{k<=t} dt_k A
        causal = t[:, None] >= torch.arange(l, device=u.device)[None, :]  # (r, l)
        # exp(cum_t - cum_s) = prod_{k=s+1..t} a_k; masked before exp so that nothing overflows
        decay = torch.exp((cum[..., t, None] - cum[..., None, :]).masked_fill(~causal, float("-inf")))  # (b,h,r,l)
        scores = torch.einsum("bthn,bshn->bhts", C, B)  # (b, h, r, l): C_t . B_s
        M = scores * decay * dt.transpose(1, 2)[:, :, None, :]  # dt_s scales column s
        diagonal = (t[:, None] == torch.arange(l, device=u.device)[None, :]).float()  # (r, l)
        return M + q["D"].float()[None, :, None, None] * diagonal

    def forward(
        self, u: Tensor, *, ssd_scan: Callable | None = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, Mamba2State]:
        """u (b, l, d_model) -> (b, l, d_model); with ``return_state`` also the state after the last
        token, from which ``step`` continues the stream."""
        b, l, _ = u.shape
        scan = ssd_scan or self._kernel(SSD_SCAN, u.device)
        z, xBC_raw, x, B, C, dt_raw = self._project(u)

        A = -torch.exp(self.A_log.float())  # (h,)
        out = scan(
            x.reshape(b, l, self.nheads, self.headdim),  # (b, l, h, p)
            self._dt(dt_raw),  # (b, l, h)
            A,
            B.reshape(b, l, self.ngroups, self.d_state),  # (b, l, g, n)
            C.reshape(b, l, self.ngroups, self.d_state),  # (b, l, g, n)
            self.chunk_size,
            D=self.D,
            return_final_states=return_state,
        )
        y, ssm = out if return_state else (out, None)
        y = self.norm(y.reshape(b, l, self.d_inner), z)  # (b, l, h, p) -> (b, l, d_inner)
        y = self.out_proj(y)  # (b, l, d_model)
        if not return_state:
            return y
        conv = F.pad(xBC_raw.transpose(1, 2), (max(0, self.d_conv - l), 0))[..., -self.d_conv :]
        # conv: (b, conv_dim, d_conv), the last d_conv raw inputs (zeros before the first token)
        return y, Mamba2State(conv=conv, ssm=ssm)

    # --- recurrent mode ------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        w = self.in_proj.weight
        device = device or w.device
        dtype = dtype or w.dtype
        return Mamba2State(
            conv=torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device, dtype=dtype),
            ssm=torch.zeros(  # float32 (float64 for a float64 model), like the scans' states
                batch_size, self.nheads, self.headdim, self.d_state, device=device,
                dtype=torch.promote_types(dtype, torch.float32),
            ),
        )

    def step(
        self, u: Tensor, state: Mamba2State, *, ssd_step: Callable | None = None
    ) -> tuple[Tensor, Mamba2State]:
        """One token per stream: u (b, d_model) -> (y (b, d_model), new state). ``state`` is not
        modified in place."""
        b = u.shape[0]
        step = ssd_step or self._kernel(SSD_STEP, u.device)
        z, xBC_raw, dt_raw = self._split_in_proj(self.in_proj(u))  # (b,d_inner) (b,conv_dim) (b,h)

        conv = torch.cat([state.conv[..., 1:], xBC_raw[..., None].to(state.conv.dtype)], dim=-1)
        # the causal conv at the newest position, accumulated in float32 like the parallel conv
        xBC = (conv.float() * self.conv1d.weight.squeeze(1).float()).sum(-1)  # (b, conv_dim)
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias.float()
        xBC = F.silu(xBC.to(u.dtype))
        x, B, C = self._split_xbc(xBC)

        A = -torch.exp(self.A_log.float())
        y, ssm = step(
            state.ssm,
            x.reshape(b, self.nheads, self.headdim),  # (b, h, p)
            self._dt(dt_raw),  # (b, h)
            A,
            B.reshape(b, self.ngroups, self.d_state),  # (b, g, n)
            C.reshape(b, self.ngroups, self.d_state),  # (b, g, n)
            self.D,
        )
        y = self.norm(y.reshape(b, self.d_inner), z)  # (b, h, p) -> (b, d_inner)
        return self.out_proj(y), Mamba2State(conv=conv, ssm=ssm)
