"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers
for Image Recognition at Scale", ICLR; ViT-Ti from Touvron et al. 2021, "Training
data-efficient image transformers & distillation through attention" (DeiT), ICML).

The learned position embedding is built for one ``image_size`` (224 by default), so a model
only accepts inputs of exactly that size; pass ``image_size=...`` to ``create`` to build a
model for another resolution (a multiple of the patch size). Attention is a single
``nn.MultiheadAttention(batch_first=True)`` per block so it stays one module (one leaf)
under ``torch.fx``.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from hwnas.zoo._layers import flush_denormals_
from hwnas.zoo._registry import register_model

__all__ = ["EncoderBlock", "VisionTransformer", "vit_b_16", "vit_tiny"]


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``.

    Args:
        embed_dim: Token width ``D``.
        num_heads: Attention heads.
        mlp_dim: Hidden width of the two-layer GELU MLP.
        dropout: Dropout after attention and in the MLP.
        attention_dropout: Dropout on the attention weights.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(embed_dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y = self.attention(y, y, y, need_weights=False)[0]
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class VisionTransformer(nn.Module):
    """ViT: patch embedding, class token, learned position embedding, encoder, linear head.

    Args:
        image_size: Input height and width the position embedding is built for.
        patch_size: Side of the square patches (stride of the patch-embedding conv).
        embed_dim: Token width ``D``.
        depth: Number of encoder blocks.
        num_heads: Attention heads per block.
        mlp_dim: Hidden width of the MLPs.
        num_classes: Classifier outputs.
        dropout: Dropout on the embeddings, after attention and in the MLPs.
        attention_dropout: Dropout on the attention weights.
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        num_classes: int = 1000,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(
                f"ViT image_size must be a multiple of patch_size={patch_size}; got image_size={image_size}. "
                f"Use e.g. image_size={image_size // patch_size * patch_size}."
            )
        self.image_size = image_size
        num_tokens = (image_size // patch_size) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(EncoderBlock(embed_dim, num_heads, mlp_dim, dropout, attention_dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        fan_in = self.patch_embed.in_channels * self.patch_embed.kernel_size[0] * self.patch_embed.kernel_size[1]
        nn.init.trunc_normal_(self.patch_embed.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.xavier_uniform_(m.in_proj_weight)
                nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        flush_denormals_(self)

    def _check_size(self, x: torch.Tensor) -> None:
        """Reject inputs the position embedding does not fit, in eager mode and under ``torch.fx``."""
        size = (self.image_size, self.image_size)
        hint = (
            f"this ViT's position embedding is built for {size[0]}x{size[1]} inputs; "
            "build it with create(..., image_size=<your size>) to use another resolution"
        )
        if isinstance(x, fx.Proxy):
            # Recorded in the graph, so traced modules check too.
            torch._assert(x.shape[-2:] == size, hint)
        elif not torch.jit.is_tracing() and tuple(x.shape[-2:]) != size:
            # (The ONNX exporter traces shapes as tensors; the export input fixes the size anyway.)
            raise ValueError(f"{hint}; expected input (N, 3, {size[0]}, {size[1]}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        x = torch.flatten(self.patch_embed(x), 2).transpose(1, 2)
        cls = self.class_token.expand(x.shape[0], -1, -1)
        x = self.dropout(torch.cat((cls, x), dim=1) + self.pos_embedding)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register_model("vit_tiny")
def vit_tiny(num_classes: int = 1000, image_size: int = 224, dropout: float = 0.0) -> VisionTransformer:
    """ViT-Ti/16 (D=192, 12 blocks, 3 heads, MLP 768): 5.7M params, 1.1 GMACs at 224."""
    return VisionTransformer(
        image_size=image_size,
        patch_size=16,
        embed_dim=192,
        depth=12,
        num_heads=3,
        mlp_dim=768,
        num_classes=num_classes,
        dropout=dropout,
    )


@register_model("vit_b_16")
def vit_b_16(num_classes: int = 1000, image_size: int = 224, dropout: float = 0.0) -> VisionTransformer:
    """ViT-B/16 (D=768, 12 blocks, 12 heads, MLP 3072): 86.6M params, 17.6 GMACs at 224."""
    return VisionTransformer(
        image_size=image_size,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_dim=3072,
        num_classes=num_classes,
        dropout=dropout,
    )
