"""DASAA: Dual Attention with the Self-Attention Alignment for efficient video super-resolution.

Chu, Qiao, Liu, Han, Cognitive Computation 14(3):1140-1151, 2022 (DOI 10.1007/s12559-021-09874-1).
Only the abstract is available and no code was published: the architecture is the library spec's
reconstruction (``dasaa_mafnet.md`` section 1). What the abstract states: DANet-style dual attention
(position + channel) on the extracted spatio-temporal features; alignment by a self-attention structure
with a morphological mask; upsampling of the attention features, then an LSTM for temporal and spatial
coherence; "FLOPS" 6.39 G. Everything else is an assumption, exposed as a constructor argument.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vsrblocks.attention.dual_attention import DualAttention
from vsrblocks.attention.masked_self_attention import (
    AlignmentOutput,
    AttentionScope,
    LeakyResidualBlock,
    MaskedSelfAttention,
    MaskMode,
)
from vsrblocks.attention.parallax_losses import parallax_losses
from vsrblocks.recurrent.conv_lstm import ConvLSTM, ConvLSTMState
from vsrblocks.shapes import check_shape

__all__ = ["DASAA", "MODEL", "PRESETS"]


class DASAA(nn.Module):
    """The DASAA network as reconstructed in the library spec, x4, centre-frame output.

    With ``T = num_frames`` LR frames, ``c = T // 2`` the reference, ``C = channels``:

    1. per frame (shared weights): ``LReLU(conv3x3(3 -> C))`` then ``n_extract_blocks`` residual blocks
       ``x + conv3x3(LReLU(conv3x3(x)))`` (no BatchNorm) -> ``F_t``;
    2. per frame: :class:`~vsrblocks.attention.DualAttention` (DAM: PAM branch + CAM branch, ``F + P + Q``)
       -> ``A_t``;
    3. alignment: :class:`~vsrblocks.attention.MaskedSelfAttention` (SAA, shared over neighbours) warps each
       neighbour ``A_t`` onto the reference ``A_c`` and fuses it with ``A_c`` and the validity mask -> ``S_t``;
       ``S_c = A_c``;
    4. upsampler (shared): ``LReLU(PS2(conv3x3(C -> 4C)))``, ``LReLU(PS2(conv3x3(C -> 4 hr_channels)))``
       -> ``U_t`` with ``hr_channels`` at 4x;
    5. :class:`~vsrblocks.recurrent.ConvLSTM` ``(hr_channels -> hr_channels)`` over ``t = 0 .. T-1`` (zero
       initial state); its last hidden state ``h_{T-1}``;
    6. ``conv3x3(hr_channels -> 3)`` ``+ bicubic x4`` of the centre LR frame.

    With ``lstm_at="lr"`` step 5 runs before step 4 on the ``C``-channel LR features (``ConvLSTM(C -> C)``)
    and only ``h_{T-1}`` is upsampled.

    Assumptions (spec sections 1(b), 1(d) and 3), each an argument with the recommended default:

    - ``num_frames=5``: input frames (any odd number), centre-frame output;
    - ``channels=64``, ``n_extract_blocks``: width and depth of the feature extractor (spec: 4 blocks;
      the ``paper`` preset uses 6, see below);
    - ``use_pam`` / ``use_cam``: DAM branches (the paper's ablation); ``dam_inter_channels`` (default C,
      DANet reduces to C/4) and ``pam_reduction=8``;
    - ``attn_scope="global"``: SAA attention over all positions (``"row"``: PASSRnet's epipolar rows,
      ``"local"``: a ``(2 local_radius + 1)^2`` window, interpretation C of the mask);
    - ``mask_mode="valid_morph"``: PASSRnet's validity mask cleaned with binary morphology
      (interpretation A; ``"soft_morph"``: differentiable grey-scale variant B; ``"none"``);
      ``mask_threshold=0.1``;
    - ``hr_channels=16``: HR width of the upsampler output and the ConvLSTM;
    - ``lstm_at="hr"``: ConvLSTM after the upsampler (the abstract's order); ``"lr"`` before it;
    - ``residual=True``: add the bicubic x4 upsampled centre frame;
    - ``stateful=False``: if ``True``, the ConvLSTM state is carried from one ``forward`` to the next
      (consecutive sliding windows of one video, same batch and size) until :meth:`reset_state`;
    - ``negative_slope=0.1``: LeakyReLU everywhere (EDVR/PASSRnet convention; the DAM's ReLU in DANet is
      ``negative_slope=0``);
    - ``aux_losses=False``: PASSRnet's auxiliary losses of the SAA stage (spec 1(d): optional, off by default,
      not in DASAA's abstract). If ``True``, every ``forward`` in training mode also computes them and keeps
      them in :attr:`last_aux_losses` (see below); what ``forward`` returns is unchanged. PASSRnet adds
      ``0.005 * (photometric + cycle + smoothness)`` to its SR loss, as
      :class:`~reference_models.training.Trainer` does (``TrainConfig.aux_weight``).

    Fixed, not switchable (the spec gives no alternative): no BatchNorm, the DAM's outer residual
    ``F + P + Q``, SAA's full-width query/key projections without ``1/sqrt(d)`` scaling (PASSRnet), values
    from the raw neighbour features, and the ConvLSTM (not a fully connected LSTM). The training recipe
    belongs to training code.

    Auxiliary losses (``aux_losses=True``): :attr:`last_aux_losses` is ``{"photometric", "cycle",
    "smoothness"}``, 0-dim tensors with their autograd graph, each the mean over the batch and the ``T - 1``
    (reference, neighbour) pairs of :func:`~vsrblocks.attention.parallax_losses` (the exact formulas are
    there); ``None`` with ``aux_losses=False``, in eval mode and before the first call. With ``M_fwd`` the
    reference-over-neighbour map, ``M_rev`` the reverse and ``V`` the SAA's validity mask (detached):

    - photometric: ``mean V |I_c - M_fwd I_t|`` with ``I`` the **LR RGB** frames: SAA runs on the LR grid
      (every layer before it has stride 1), so the map that warps the neighbour's features warps its RGB
      frame too (the raw frame, not the ``b3`` values);
    - cycle: ``mean V_i |(M_fwd M_rev)[i, j] - 1[i = j]|``, the round trip reference -> neighbour -> reference;
    - smoothness: mean L1 between the maps of vertically and of horizontally neighbouring pixels, at keys
      shifted by the same step, for ``M_fwd`` and for ``M_rev``.

    Per scope: ``"global"`` uses the ``(HW x HW)`` maps; ``"local"`` the same maps with weight 0 outside the
    window (with ``local_radius >= max(H, W) - 1`` it gives the global values); ``"row"`` PASSRnet's per-row
    ``(W x W)`` maps, on which the three losses are PASSRnet's own, in one direction (DASAA has no mask on the
    neighbour's grid for the mirrored terms). Means run over all compared entries as in PASSRnet, so the 2-D
    cycle and smoothness terms are about ``H`` times smaller than the row ones. ``mask_mode="none"`` (no ``V``)
    and ``num_frames=1`` (no neighbour) raise ``ValueError``.

    Memory: the maps are materialised (:func:`~vsrblocks.attention.attention_map`, for ``"local"`` too),
    ``B (T - 1) (HW)^2`` values each for ``M_fwd``, ``M_rev`` and their product, plus gradients: 16 MiB per map
    per 5-frame clip at 32x32 LR, 256 MiB at 64x64. Fine for training patches, not for whole frames, hence
    nothing extra in eval mode. Without them (and always in eval mode) memory is linear in the pixels: the DAM's
    PAM and the SAA warp run through the fused attention kernel, the SAA mask's column sums in blocks of 32
    queries (``(HW)^2`` time, no ``(HW)^2`` tensor); ``python -m reference_models run --max-memory`` tiles
    frames that would exceed a budget.

    FLOPs: the abstract's 6.39 G is read as thop-style conv-only MACs (see
    :func:`reference_models.inference.flops.count_macs`) at an unknown input size. At ``(1, 5, 3, 32, 32)`` the
    spec's default (4 extraction blocks, 0.75 M parameters) counts 5.80 G (plus 1.22 G in attention
    products, 1.52 G executed: the fused kernel runs PAM's query/key products at the value width); the ``paper`` preset uses 6 blocks (0.90 M parameters), 6.55 G (+2.5 %), the closest block
    count (5 blocks: 6.17 G, -3.4 %).

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB in [0, 1], any ``H, W``
        - Output: ``(B, 3, 4H, 4W)``

    Examples:
        >>> model = DASAA(**PRESETS["tiny"])
        >>> model(torch.rand(1, 5, 3, 9, 11)).shape
        torch.Size([1, 3, 36, 44])
    """

    scale = 4
    output_mode = "center"

    def __init__(
        self,
        num_frames: int = 5,
        channels: int = 64,
        n_extract_blocks: int = 4,
        use_pam: bool = True,
        use_cam: bool = True,
        dam_inter_channels: int | None = None,
        pam_reduction: int = 8,
        attn_scope: AttentionScope = "global",
        local_radius: int = 7,
        mask_mode: MaskMode = "valid_morph",
        mask_threshold: float = 0.1,
        hr_channels: int = 16,
        lstm_at: Literal["hr", "lr"] = "hr",
        residual: bool = True,
        stateful: bool = False,
        negative_slope: float = 0.1,
        aux_losses: bool = False,
    ) -> None:
        super().__init__()
        if num_frames < 1 or num_frames % 2 != 1:
            raise ValueError(f"num_frames must be a positive odd number, got {num_frames}")
        if lstm_at not in ("hr", "lr"):
            raise ValueError(f"lstm_at must be 'hr' or 'lr', got {lstm_at!r}")
        if n_extract_blocks < 0:
            raise ValueError(f"n_extract_blocks must be >= 0, got {n_extract_blocks}")
        if aux_losses and num_frames == 1:
            raise ValueError(
                "aux_losses: the photometric, cycle and smoothness losses need a neighbour frame, got num_frames=1"
            )
        if aux_losses and mask_mode == "none":
            raise ValueError(
                "aux_losses: the photometric and cycle losses need the validity mask V, but mask_mode='none'"
            )
        self.num_frames = num_frames
        self.center_index = num_frames // 2
        self.channels = channels
        self.hr_channels = hr_channels
        self.lstm_at = lstm_at
        self.residual = residual
        self.stateful = stateful
        self.negative_slope = negative_slope
        self.aux_losses = aux_losses
        self.last_aux_losses: dict[str, torch.Tensor] | None = None
        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.extractor = nn.Sequential(*(LeakyResidualBlock(channels, negative_slope) for _ in range(n_extract_blocks)))
        self.dam = DualAttention(
            channels,
            inter_channels=dam_inter_channels,
            reduction=pam_reduction,
            use_pam=use_pam,
            use_cam=use_cam,
            negative_slope=negative_slope,
        )
        self.saa = MaskedSelfAttention(
            channels,
            mask_mode=mask_mode,
            attn_scope=attn_scope,
            local_radius=local_radius,
            threshold=mask_threshold,
            negative_slope=negative_slope,
        )
        self.upconv1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.upconv2 = nn.Conv2d(channels, 4 * hr_channels, 3, padding=1)
        lstm_channels = hr_channels if lstm_at == "hr" else channels
        self.lstm = ConvLSTM(lstm_channels, lstm_channels)
        self.conv_last = nn.Conv2d(hr_channels, 3, 3, padding=1)
        self._state: ConvLSTMState | None = None

    def reset_state(self) -> None:
        """Forget the carried ConvLSTM state (``stateful=True``): the next clip starts from zeros."""
        self._state = None

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act(F.pixel_shuffle(self.upconv1(x), 2))
        return self._act(F.pixel_shuffle(self.upconv2(x), 2))

    def _recur(self, clip: torch.Tensor) -> torch.Tensor:
        state = self._state if self.stateful else None
        if state is not None and (state.h.shape[0] != clip.shape[0] or state.h.shape[-2:] != clip.shape[-2:]):
            state = None  # a new batch or frame size is a new video
        _, final = self.lstm(clip, state)
        if self.stateful:
            self._state = ConvLSTMState(final.h.detach(), final.c.detach())
        return final.h

    def _neighbours(self, clip: torch.Tensor) -> torch.Tensor:
        c = self.center_index
        return torch.cat((clip[:, :c], clip[:, c + 1 :]), dim=1)

    def _aux_losses(self, clip: torch.Tensor, alignment: AlignmentOutput) -> dict[str, torch.Tensor]:
        pairs = self.num_frames - 1
        reference = repeat(clip[:, self.center_index], "b c h w -> (b k) c h w", k=pairs)
        neighbours = rearrange(self._neighbours(clip), "b k c h w -> (b k) c h w")
        forward, reverse, mask = (
            rearrange(cast(torch.Tensor, t), "b k ... -> (b k) ...")  # set in training with aux_losses
            for t in (alignment.forward_attention, alignment.reverse_attention, alignment.mask)
        )
        return parallax_losses(forward, reverse, reference, neighbours, mask)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        dims = check_shape(clip, "B T C H W", name="clip", T=self.num_frames, C=3)
        t, c = dims["T"], self.center_index
        self.last_aux_losses = None
        frames = rearrange(clip, "b t c h w -> (b t) c h w")
        feats = self.dam(self.extractor(self._act(self.conv_first(frames))))
        feats = rearrange(feats, "(b t) c h w -> b t c h w", t=t)
        reference = feats[:, c]
        aligned = list(feats.unbind(dim=1))
        if t > 1:
            with_aux = self.aux_losses and self.training
            alignment = self.saa.align(reference, self._neighbours(feats), return_attention=with_aux)
            if with_aux:
                self.last_aux_losses = self._aux_losses(clip, alignment)
            warped = alignment.output.unbind(dim=1)
            aligned = [*warped[:c], reference, *warped[c:]]
        aligned_clip = torch.stack(aligned, dim=1)
        if self.lstm_at == "hr":
            up = self._upsample(rearrange(aligned_clip, "b t c h w -> (b t) c h w"))
            hidden = self._recur(rearrange(up, "(b t) c h w -> b t c h w", t=t))
        else:
            hidden = self._upsample(self._recur(aligned_clip))
        out = self.conv_last(hidden)
        if self.residual:
            out = out + F.interpolate(clip[:, c], scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, scale={self.scale}, output_mode={self.output_mode!r}, "
            f"lstm_at={self.lstm_at!r}, residual={self.residual}, stateful={self.stateful}, aux_losses={self.aux_losses}"
        )


MODEL = DASAA

PRESETS: dict[str, dict] = {
    # Spec defaults with 6 extraction blocks: 6.55 G conv-only MACs at (1, 5, 3, 32, 32) vs the paper's 6.39 G.
    "paper": {"num_frames": 5, "channels": 64, "n_extract_blocks": 6, "hr_channels": 16},
    "tiny": {"num_frames": 5, "channels": 16, "n_extract_blocks": 1, "hr_channels": 4},
}
