"""Small models in the shapes real exporters write: torchvision-style CNNs, detectors, OCR,
speech and transformers (tiny configs, random weights, nothing downloaded).

Each entry builds a torch module and example inputs; `export` writes it with torch.onnx.export
(the TorchScript exporter or the dynamo one). Imported only where torch is installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class ZooModel:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, int], dict[str, np.ndarray]]  # (batch, seed) -> feeds
    # symbolic axes per input: {input: {axis: name}}; outputs get "batch" on axis 0 by default
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    second_shape: Callable[[int], dict[str, np.ndarray]] | None = None  # another shape, seed
    rtol: float = 1e-4
    atol: float = 1e-4
    dynamo_ok: bool = True  # False: a ScriptModule, which only the TorchScript exporter takes


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: Any = nn.ReLU):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act() if act is not None else nn.Identity(),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = conv_bn(cin, cout, 3, stride)
        self.c2 = conv_bn(cout, cout, 3, 1, act=None)
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        return F.relu(self.c2(self.c1(x)) + idt)


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(
            BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2)
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, act=nn.ReLU6, se=False):
        super().__init__()
        hid = cin * expand
        layers = [conv_bn(cin, hid, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(hid, hid, 3, stride, groups=hid, act=act))
        if se:
            layers.append(SqueezeExcite(hid))
        layers.append(conv_bn(hid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.res else y


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, gate: Any = nn.Hardsigmoid) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(8, c // 4), 1)
        self.fc2 = nn.Conv2d(max(8, c // 4), c, 1)
        self.gate = gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(F.relu(self.fc1(s))))


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.ReLU6),
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 2, 6),
            InvertedResidual(24, 24, 1, 6),
            InvertedResidual(24, 32, 2, 6),
            conv_bn(32, 64, 1, act=nn.ReLU6),
        )
        self.cls = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x):
        x = self.f(x)
        return self.cls(x.mean([2, 3]))


class MobileNetV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.Hardswish),
            InvertedResidual(16, 16, 2, 1, act=nn.ReLU, se=True),
            InvertedResidual(16, 24, 2, 4, act=nn.Hardswish, se=True),
            InvertedResidual(24, 24, 1, 3, act=nn.Hardswish, se=True),
        )
        self.head = nn.Sequential(nn.Linear(24, 64), nn.Hardswish(), nn.Linear(64, 10))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.f(x), 1).flatten(1)
        return self.head(x)


class EfficientNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def mb(cin, cout, s, e):
            hid = cin * e
            return nn.Sequential(
                conv_bn(cin, hid, 1, act=nn.SiLU),
                conv_bn(hid, hid, 3, s, groups=hid, act=nn.SiLU),
                SqueezeExcite(hid, gate=nn.Sigmoid),
                conv_bn(hid, cout, 1, act=None),
            )

        self.stem = conv_bn(3, 16, 3, 2, act=nn.SiLU)
        self.b1 = mb(16, 24, 2, 4)
        self.b2 = mb(24, 24, 1, 4)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.b1(self.stem(x))
        x = x + self.b2(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ShuffleBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(
            conv_bn(h, h, 1), conv_bn(h, h, 3, groups=h, act=None), conv_bn(h, h, 1)
        )

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch(x2)), 1)
        b, c, h, w = out.shape
        out = out.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return out


class ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2)
        self.blocks = nn.Sequential(ShuffleBlock(32), ShuffleBlock(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean([2, 3]))


class DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.l1 = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3, 1, 1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(24), nn.ReLU(), nn.Conv2d(24, 8, 3, 1, 1))
        self.trans = nn.Sequential(
            nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 16, 1), nn.AvgPool2d(2)
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        x = self.trans(x)
        return self.fc(F.adaptive_avg_pool2d(x, (1, 1)).view(x.size(0), -1))


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d1 = conv_bn(3, 8)
        self.d2 = conv_bn(8, 16)
        self.up = nn.ConvTranspose2d(16, 8, 2, 2)
        self.u1 = conv_bn(16, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a = self.d1(x)
        b = self.d2(F.max_pool2d(a, 2))
        u = self.up(b)
        return self.out(self.u1(torch.cat([a, u], 1)))


class DBNet(nn.Module):
    """FPN text detector: lateral 1x1 convs, upsample-add, concat, ConvTranspose head."""

    def __init__(self) -> None:
        super().__init__()
        self.c2 = conv_bn(3, 8, 3, 2)
        self.c3 = conv_bn(8, 16, 3, 2)
        self.c4 = conv_bn(16, 32, 3, 2)
        self.lat = nn.ModuleList([nn.Conv2d(c, 16, 1) for c in (8, 16, 32)])
        self.smooth = nn.ModuleList([nn.Conv2d(16, 4, 3, padding=1) for _ in range(3)])
        self.head = nn.Sequential(
            conv_bn(12, 8),
            nn.ConvTranspose2d(8, 8, 2, 2),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 2, 2),
            nn.Sigmoid(),
        )

    def forward(self, x):
        f2 = self.c2(x)
        f3 = self.c3(f2)
        f4 = self.c4(f3)
        p4 = self.lat[2](f4)
        p3 = self.lat[1](f3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        p2 = self.lat[0](f2) + F.interpolate(
            p3, size=f2.shape[2:], mode="bilinear", align_corners=False
        )
        o4 = F.interpolate(self.smooth[2](p4), scale_factor=4.0, mode="nearest")
        o3 = F.interpolate(
            self.smooth[1](p3), scale_factor=2.0, mode="bilinear", align_corners=False
        )
        o2 = self.smooth[0](p2)
        return self.head(torch.cat([o2, o3, o4], 1))


class YoloHead(nn.Module):
    """YOLOv5-style: backbone, upsample + concat neck, per-level decode with Split/Sigmoid/grid."""

    def __init__(self, na: int = 3, nc: int = 4) -> None:
        super().__init__()
        self.na, self.no = na, nc + 5
        self.b1 = conv_bn(3, 16, 3, 2, act=nn.SiLU)
        self.b2 = conv_bn(16, 32, 3, 2, act=nn.SiLU)
        self.b3 = conv_bn(32, 32, 3, 2, act=nn.SiLU)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1 = conv_bn(64, 32, 1, act=nn.SiLU)
        self.m = nn.ModuleList([nn.Conv2d(32, na * self.no, 1), nn.Conv2d(32, na * self.no, 1)])
        self.register_buffer(
            "anchors",
            torch.tensor([[10.0, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]).view(2, 3, 2),
        )

    def forward(self, x):
        p3 = self.b2(self.b1(x))
        p4 = self.b3(p3)
        n3 = self.n1(torch.cat([self.up(p4), p3], 1))
        outs = []
        for i, (feat, stride) in enumerate(((n3, 4.0), (p4, 8.0))):
            y = self.m[i](feat)
            bs, _, ny, nx = y.shape
            y = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous().sigmoid()
            yv, xv = torch.meshgrid(
                torch.arange(ny, dtype=torch.float32),
                torch.arange(nx, dtype=torch.float32),
                indexing="ij",
            )
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)
            xy, wh, conf = y.split((2, 2, self.no - 4), 4)
            xy = (xy * 2 - 0.5 + grid) * stride
            wh = (wh * 2) ** 2 * self.anchors[i].view(1, self.na, 1, 1, 2)
            outs.append(torch.cat((xy, wh, conf), 4).view(bs, -1, self.no))
        return torch.cat(outs, 1)


class CRNN(nn.Module):
    def __init__(self, rnn: str = "lstm") -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            conv_bn(1, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d((2, 1))
        )
        cls = nn.LSTM if rnn == "lstm" else nn.GRU
        self.rnn = cls(32 * 4, 24, num_layers=2, bidirectional=True, batch_first=False)
        self.fc = nn.Linear(48, 20)

    def forward(self, x):
        f = self.cnn(x)  # b, c, h, w
        b, c, h, w = f.shape
        f = f.reshape(b, c * h, w).permute(2, 0, 1)  # w, b, c*h
        r, _ = self.rnn(f)
        return self.fc(r).log_softmax(-1)


class SpeechEncoder(nn.Module):
    """Whisper-style: two Conv1d + GELU, positional embedding, a transformer layer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(16, 32, 3, padding=1)
        self.c2 = nn.Conv1d(32, 32, 3, stride=2, padding=1)
        self.pos = nn.Parameter(torch.randn(64, 32) * 0.02)
        self.ln1, self.ln2, self.ln = nn.LayerNorm(32), nn.LayerNorm(32), nn.LayerNorm(32)
        self.qkv = nn.Linear(32, 96)
        self.proj = nn.Linear(32, 32)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))

    def forward(self, x):
        x = F.gelu(self.c1(x))
        x = F.gelu(self.c2(x)).permute(0, 2, 1)
        x = x + self.pos[: x.shape[1]]
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, 4, c // 4).permute(2, 0, 3, 1, 4).unbind(0)
        att = (q @ k.transpose(-2, -1) * (c // 4) ** -0.5).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        x = x + self.mlp(self.ln2(x))
        return self.ln(x)


def _image(c: int, h: int, w: int):
    def make(batch: int, seed: int) -> dict[str, np.ndarray]:
        return {
            "x": np.random.default_rng(seed).standard_normal((batch, c, h, w)).astype(np.float32)
        }

    return make


def _tokens(vocab: int, seq: int, mask: bool = True, types: bool = False):
    def make(batch: int, seed: int, seq: int = seq) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64)}
        if mask:
            m = np.ones((batch, seq), np.int64)
            m[0, seq - 2 :] = 0
            feeds["attention_mask"] = m
        if types:
            feeds["token_type_ids"] = rng.integers(0, 2, (batch, seq)).astype(np.int64)
        return feeds

    return make


def _pixels(size: int):
    def make(batch: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {"pixel_values": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}

    return make


IMAGE_DYN = {"x": {0: "batch"}}
TOKEN_DYN = {0: "batch", 1: "seq"}


def _hf(config_name: str, model_name: str, **cfg: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        config = getattr(transformers, config_name)(**cfg)
        model = getattr(transformers, model_name)(config)
        if model_name.startswith("Wav2Vec2"):
            return HFInputWrapper(model, "input_values")
        if any(model_name.startswith(p) for p in ("ViT", "ConvNext", "Swin", "Segformer")):
            return HFInputWrapper(model, "pixel_values")
        return HFWrapper(model)

    return build


class HFWrapper(nn.Module):
    """Positional inputs by name; returns only the first output (the last hidden state)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(**kwargs)[0]


class HFInputWrapper(nn.Module):
    """One tensor input given by keyword (pixel_values, input_values)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x):
        return self.model(**{self.name: x})[0]


class T5Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import transformers

        cfg = transformers.T5Config(
            vocab_size=100,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            dropout_rate=0.0,
        )
        self.enc = transformers.T5EncoderModel(cfg)

    def forward(self, input_ids, attention_mask):
        return self.enc(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


class BartEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import transformers

        cfg = transformers.BartConfig(
            vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=1,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
            decoder_ffn_dim=64, max_position_embeddings=64,
        )  # fmt: skip
        self.enc = transformers.BartModel(cfg).get_encoder()

    def forward(self, input_ids, attention_mask):
        return self.enc(input_ids=input_ids, attention_mask=attention_mask)[0]


class WhisperEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import transformers

        cfg = transformers.WhisperConfig(
            vocab_size=100,
            num_mel_bins=16,
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=4,
            decoder_layers=1,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_source_positions=16,
            max_target_positions=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
        self.enc = transformers.WhisperModel(cfg).get_encoder()

    def forward(self, input_features):
        return self.enc(input_features, return_dict=False)[0]


class CachedDecoder(nn.Module):
    """A transformers decoder with its KV cache as graph inputs and outputs (past keys and
    values per layer in, the hidden state and the grown cache out), as decoding exports are."""

    def __init__(self, model: nn.Module, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids, attention_mask, *past):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=True,
        )
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out[0], *present)


def _cached_inputs(new: int, past: int, kv_heads: int, head_dim: int, layers: int = 2):
    def make(batch: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {
            "input_ids": rng.integers(0, 100, (batch, new)).astype(np.int64),
            "attention_mask": np.ones((batch, past + new), np.int64),
        }
        for i in range(layers):
            for kv in "kv":
                feeds[f"past_{kv}{i}"] = rng.standard_normal(
                    (batch, kv_heads, past, head_dim)
                ).astype(np.float32)
        return feeds

    return make


def _cached_decoder(config_name: str, model_name: str, kv_heads: int, **cfg: Any) -> ZooModel:
    """One new token over 5 cached ones; the second shape 9 cached (torch's tracer bakes the
    new-token count into Llama's GQA Reshape, so only the cache length varies)."""

    def build() -> nn.Module:
        import transformers

        config = getattr(transformers, config_name)(**cfg)
        return CachedDecoder(getattr(transformers, model_name)(config), 2)

    dyn: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total"},
    }
    dyn |= {f"past_{kv}{i}": {0: "batch", 2: "past"} for i in range(2) for kv in "kv"}
    name = model_name.removesuffix("Model").lower() + "_kv"
    return ZooModel(
        name,
        build,
        _cached_inputs(1, 5, kv_heads, 8),
        dyn,
        lambda s: _cached_inputs(1, 9, kv_heads, 8)(1, s),
    )


class TinyLlama(nn.Module):
    """A hand-written Llama layer: RMSNorm, rotary embeddings from arange, a causal mask from
    triu(full(-inf)) (Trilu over ConstantOfShape), SiLU-gated MLP, LM head."""

    def __init__(self, vocab: int = 100, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.h, self.hd = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.up = nn.Linear(d, 64, bias=False)
        self.gate = nn.Linear(d, 64, bias=False)
        self.down = nn.Linear(64, d, bias=False)
        self.norm1 = nn.Parameter(torch.ones(d))
        self.norm2 = nn.Parameter(torch.ones(d))
        self.lm = nn.Linear(d, vocab, bias=False)

    @staticmethod
    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    def rope(self, x, positions):
        half = self.hd // 2
        inv_freq = 1.0 / (10000 ** (torch.arange(0, half, dtype=torch.float32) / half))
        angle = positions[:, None].float() * inv_freq[None, :]
        cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    def forward(self, input_ids):
        b, t = input_ids.shape
        x = self.emb(input_ids)
        qkv = self.qkv(self.rms(x, self.norm1)).view(b, t, 3, self.h, self.hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        positions = torch.arange(t)
        q, k = self.rope(q, positions), self.rope(k, positions)
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        att = (q @ k.transpose(-1, -2) / math.sqrt(self.hd) + mask).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, -1))
        h = self.rms(x, self.norm2)
        return self.lm(x + self.down(F.silu(self.gate(h)) * self.up(h)))


class CausalSelfAttention(nn.Module):
    """F.scaled_dot_product_attention(is_causal=True), as nanoGPT-style models call it."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.h = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class DetrLike(nn.Module):
    """DETR-style: CNN backbone, sine positions from the feature map's size, nn.Transformer
    (encoder + decoder) over learned queries, class softmax and box sigmoid heads."""

    def __init__(self, d: int = 32, queries: int = 10) -> None:
        super().__init__()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel does not export
        self.backbone = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, d, 3, 2))
        self.tr = nn.Transformer(d, 4, 1, 1, 64, dropout=0.0, batch_first=True)
        self.query = nn.Parameter(torch.randn(queries, d))
        self.cls = nn.Linear(d, 5)
        self.box = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))

    def forward(self, x):
        f = self.backbone(x)
        b, c, h, w = f.shape
        ys = torch.arange(h, dtype=torch.float32)[:, None, None].expand(h, w, 1)
        xs = torch.arange(w, dtype=torch.float32)[None, :, None].expand(h, w, 1)
        freq = 1.0 / (10000 ** (torch.arange(c // 4, dtype=torch.float32) / (c // 4)))
        pos = torch.cat(
            [(ys * freq).sin(), (ys * freq).cos(), (xs * freq).sin(), (xs * freq).cos()], -1
        )
        src = f.flatten(2).transpose(1, 2) + pos.view(1, h * w, c)
        hs = self.tr(src, self.query.unsqueeze(0).repeat(b, 1, 1))
        return torch.cat([self.cls(hs).softmax(-1), self.box(hs).sigmoid()], -1)


class PaddedEncoder(nn.Module):
    """nn.TransformerEncoder (pre-norm) with src_key_padding_mask from an attention mask."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel does not export
        self.emb = nn.Embedding(100, d)
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, input_ids, attention_mask):
        return self.enc(self.emb(input_ids), src_key_padding_mask=attention_mask == 0)


class SuperResolution(nn.Module):
    """ESPCN-style: InstanceNorm, GroupNorm, reflect padding, PixelShuffle, and a bilinear
    align_corners skip."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 5, padding=2)
        self.n1 = nn.InstanceNorm2d(16, affine=True)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.n2 = nn.GroupNorm(4, 16)
        self.c3 = nn.Conv2d(16, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        y = F.leaky_relu(self.n1(self.c1(x)), 0.2)
        y = F.elu(self.n2(self.c2(y)))
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.shuffle(self.c3(y)) + up


class YoloV8Head(nn.Module):
    """YOLOv8-style anchor-free decode: DFL (softmax over 16 bins, a fixed 1x1 conv), anchor
    points from the feature map's shape, xywh + class sigmoid."""

    def __init__(self, nc: int = 4, reg: int = 16) -> None:
        super().__init__()
        self.reg, self.nc = reg, nc
        self.b = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.SiLU), conv_bn(16, 32, 3, 2, act=nn.SiLU)
        )
        self.box = nn.Conv2d(32, 4 * reg, 1)
        self.cls = nn.Conv2d(32, nc, 1)
        self.dfl = nn.Conv2d(reg, 1, 1, bias=False)
        self.dfl.weight.data[:] = torch.arange(reg, dtype=torch.float32).view(1, reg, 1, 1)

    def forward(self, x):
        f = self.b(x)
        b, _, h, w = f.shape
        box = self.box(f).view(b, 4, self.reg, h * w).transpose(2, 1).softmax(1)
        dist = self.dfl(box).view(b, 4, h * w)
        sy, sx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32) + 0.5,
            torch.arange(w, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        anchors = torch.stack((sx, sy), 0).view(1, 2, -1)
        lt, rb = dist.chunk(2, 1)
        xy, wh = (anchors - lt + anchors + rb) / 2, rb + lt
        cls = self.cls(f).view(b, self.nc, -1).sigmoid()
        return torch.cat((xy, wh, cls), 1) * 4.0


class StatefulLSTM(nn.Module):
    """A 2-layer LSTM whose initial states are graph inputs and final states outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x, h0, c0):
        y, (h, c) = self.lstm(x, (h0, c0))
        return self.fc(y), h, c


class ScriptedRNN(nn.Module):
    """A recurrent loop written in Python and compiled with torch.jit.script: a Loop over
    x.size(1) whose carried output grows by one step per iteration (torch.cat), with an If on
    data inside."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Linear(16, 8)
        self.out = nn.Linear(8, 8)

    def forward(self, x):
        h = torch.zeros(x.size(0), 8)
        outs = torch.zeros(x.size(0), 0, 8)
        for i in range(x.size(1)):
            h = torch.tanh(self.cell(torch.cat([x[:, i], h], 1)))
            if bool(h.sum() > 0):
                h = h * 0.5
            outs = torch.cat([outs, self.out(h).unsqueeze(1)], 1)
        return outs


class Seq2Seq(nn.Module):
    """T5 / BART for conditional generation, encoder and decoder in one graph (logits out)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        import transformers

        if kind == "t5":
            cfg = transformers.T5Config(
                vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=20,
                dropout_rate=0.0, decoder_start_token_id=0,
            )  # fmt: skip
            self.m = transformers.T5ForConditionalGeneration(cfg)
        else:
            cfg = transformers.BartConfig(
                vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                decoder_ffn_dim=64, max_position_embeddings=64,
            )  # fmt: skip
            self.m = transformers.BartForConditionalGeneration(cfg)

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        return self.m(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
            return_dict=False,
        )[0]


def _seq2seq_inputs(source: int, target: int):
    def make(batch: int, seed: int) -> dict[str, np.ndarray]:
        feeds = _tokens(100, source)(batch, seed)
        rng = np.random.default_rng(seed + 7)
        feeds["decoder_input_ids"] = rng.integers(0, 100, (batch, target)).astype(np.int64)
        return feeds

    return make


class LogitsWrapper(nn.Module):
    """A causal LM's logits (no cache)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits


class PixelValuesWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x)[0]


def _hf_wrapped(wrapper: type[nn.Module], config_name: str, model_name: str, **cfg: Any):
    def build() -> nn.Module:
        import transformers

        config = getattr(transformers, config_name)(**cfg)
        return wrapper(getattr(transformers, model_name)(config))

    return build


_TINY_BERT = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


_TINY_GPT2 = dict(
    vocab_size=100,
    n_embd=32,
    n_layer=2,
    n_head=4,
    n_positions=64,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
)
TOKENS_DYN = {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN}


def zoo() -> list[ZooModel]:
    img = _image(3, 32, 32)
    return [
        ZooModel("resnet", ResNet, img, IMAGE_DYN),
        ZooModel("mobilenetv2", MobileNetV2, img, IMAGE_DYN),
        ZooModel("mobilenetv3", MobileNetV3, img, IMAGE_DYN),
        ZooModel("efficientnet", EfficientNet, img, IMAGE_DYN),
        ZooModel("shufflenet", ShuffleNet, img, IMAGE_DYN),
        ZooModel("densenet", DenseNet, img, IMAGE_DYN),
        ZooModel(
            "unet",
            UNet,
            img,
            {"x": {0: "batch", 2: "h", 3: "w"}},
            second_shape=lambda s: _image(3, 48, 40)(1, s),
        ),
        ZooModel(
            "dbnet",
            DBNet,
            img,
            {"x": {0: "batch", 2: "h", 3: "w"}},
            second_shape=lambda s: _image(3, 64, 48)(1, s),
        ),
        ZooModel(
            "yolo",
            YoloHead,
            img,
            {"x": {0: "batch", 2: "h", 3: "w"}},
            second_shape=lambda s: _image(3, 64, 32)(1, s),
        ),
        ZooModel(
            "crnn_lstm",
            lambda: CRNN("lstm"),
            _image(1, 16, 40),
            {"x": {0: "batch", 3: "width"}},
            second_shape=lambda s: _image(1, 16, 64)(1, s),
        ),
        ZooModel(
            "crnn_gru", lambda: CRNN("gru"), _image(1, 16, 40), {"x": {0: "batch", 3: "width"}}
        ),
        ZooModel(
            "speech",
            SpeechEncoder,
            lambda b, s: {
                "x": np.random.default_rng(s).standard_normal((b, 16, 60)).astype(np.float32)
            },
            {"x": {0: "batch", 2: "frames"}},
            second_shape=lambda s: {
                "x": np.random.default_rng(s).standard_normal((1, 16, 100)).astype(np.float32)
            },
        ),
        ZooModel(
            "bert",
            _hf("BertConfig", "BertModel", **_TINY_BERT),
            _tokens(100, 12, types=True),
            {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN, "token_type_ids": TOKEN_DYN},
            second_shape=lambda s: _tokens(100, 20, types=True)(1, s),
        ),
        ZooModel(
            "distilbert",
            _hf(
                "DistilBertConfig",
                "DistilBertModel",
                vocab_size=100,
                dim=32,
                n_layers=2,
                n_heads=4,
                hidden_dim=64,
                max_position_embeddings=64,
                dropout=0.0,
                attention_dropout=0.0,
            ),
            _tokens(100, 12),
            {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN},
            second_shape=lambda s: _tokens(100, 7)(2, s),
        ),
        ZooModel(
            "roberta",
            _hf("RobertaConfig", "RobertaModel", **{**_TINY_BERT, "pad_token_id": 1}),
            _tokens(100, 12),
            {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN},
            second_shape=lambda s: _tokens(100, 20)(1, s),
        ),
        ZooModel(
            "albert",
            _hf("AlbertConfig", "AlbertModel", **{**_TINY_BERT, "embedding_size": 16}),
            _tokens(100, 12),
            {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN},
        ),
        ZooModel(
            "gpt2",
            _hf("GPT2Config", "GPT2Model", **_TINY_GPT2, use_cache=False),
            _tokens(100, 12),
            {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN},
            second_shape=lambda s: _tokens(100, 20)(1, s),
        ),
        ZooModel(
            "vit",
            _hf(
                "ViTConfig",
                "ViTModel",
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                image_size=32,
                patch_size=8,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            ),
            lambda b, s: {
                "pixel_values": np.random.default_rng(s)
                .standard_normal((b, 3, 32, 32))
                .astype(np.float32)
            },
            {"pixel_values": {0: "batch"}},
        ),
        ZooModel(
            "t5_encoder",
            T5Encoder,
            _tokens(100, 12),
            {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN},
            second_shape=lambda s: _tokens(100, 20)(1, s),
        ),
        ZooModel(
            "whisper_encoder",
            WhisperEncoder,
            lambda b, s: {
                "input_features": np.random.default_rng(s)
                .standard_normal((b, 16, 32))
                .astype(np.float32)
            },
            {"input_features": {0: "batch"}},
        ),
        # decoders and detectors as users export them (causal masks, KV caches, DETR)
        ZooModel(
            "tiny_llama",
            TinyLlama,
            lambda b, s: {"input_ids": _ids(s, (b, 12))},
            {"input_ids": TOKEN_DYN},
            second_shape=lambda s: {"input_ids": _ids(s, (1, 20))},
        ),
        ZooModel(
            "causal_sdpa",
            CausalSelfAttention,
            lambda b, s: {"x": _normal(s, (b, 12, 32))},
            {"x": {0: "batch", 1: "seq"}},
            second_shape=lambda s: {"x": _normal(s, (1, 7, 32))},
        ),
        _cached_decoder("GPT2Config", "GPT2Model", 4, **_TINY_GPT2),
        ZooModel(
            "t5",
            lambda: Seq2Seq("t5"),
            _seq2seq_inputs(12, 5),
            {**TOKENS_DYN, "decoder_input_ids": {0: "batch", 1: "target"}},
            second_shape=lambda s: _seq2seq_inputs(20, 3)(1, s),
        ),
        ZooModel(
            "detr",
            DetrLike,
            img,
            {"x": {0: "batch", 2: "h", 3: "w"}},
            second_shape=lambda s: _image(3, 48, 32)(1, s),
        ),
        ZooModel(
            "yolov8",
            YoloV8Head,
            img,
            {"x": {0: "batch", 2: "h", 3: "w"}},
            second_shape=lambda s: _image(3, 64, 32)(1, s),
        ),
        ZooModel(
            "superres",
            SuperResolution,
            _image(3, 16, 16),
            {"x": {0: "batch", 2: "h", 3: "w"}},
            second_shape=lambda s: _image(3, 24, 20)(1, s),
        ),
        ZooModel(
            "stateful_lstm",
            StatefulLSTM,
            lambda b, s: {
                "x": _normal(s, (b, 7, 8)),
                "h0": _normal(s + 1, (2, b, 16)),
                "c0": _normal(s + 2, (2, b, 16)),
            },
            {"x": {0: "batch", 1: "seq"}, "h0": {1: "batch"}, "c0": {1: "batch"}},
        ),
        ZooModel(
            "scripted_rnn",
            lambda: torch.jit.script(ScriptedRNN()),
            lambda b, s: {"x": _normal(s, (b, 5, 8))},
            {"x": {0: "batch", 1: "seq"}},
            second_shape=lambda s: {"x": _normal(s, (1, 9, 8))},
            dynamo_ok=False,
        ),
        ZooModel(
            "padded_encoder",
            PaddedEncoder,
            _tokens(100, 12),
            TOKENS_DYN,
            second_shape=lambda s: _tokens(100, 20)(1, s),
        ),
    ]


def _ids(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 100, shape).astype(np.int64)


def _normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _more_transformers() -> list[ZooModel]:
    """Further architectures from transformers, tiny configs (a second tier: slower to export)."""
    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    dyn2 = {"input_ids": TOKEN_DYN, "attention_mask": TOKEN_DYN}
    toks = _tokens(100, 12)
    again = lambda s: _tokens(100, 20)(1, s)  # noqa: E731
    llama = dict(vocab_size=100, **tiny, num_key_value_heads=2, max_position_embeddings=64)
    return [
        ZooModel("llama", _hf("LlamaConfig", "LlamaModel", **llama), toks, dyn2, again),
        ZooModel("qwen2", _hf("Qwen2Config", "Qwen2Model", **llama), toks, dyn2, again),
        ZooModel("mistral", _hf("MistralConfig", "MistralModel", **llama), toks, dyn2, again),
        ZooModel("bart_encoder", BartEncoder, toks, dyn2, again),
        ZooModel(
            "electra",
            _hf("ElectraConfig", "ElectraModel", vocab_size=100, embedding_size=16, **tiny),
            toks,
            dyn2,
            again,
        ),
        ZooModel(
            "deberta_v2",
            _hf(
                "DebertaV2Config",
                "DebertaV2Model",
                vocab_size=100,
                **tiny,
                max_position_embeddings=64,
                relative_attention=True,
                position_buckets=8,
                pos_att_type=["p2c", "c2p"],
            ),
            toks,
            dyn2,
            again,
        ),
        ZooModel(
            "mpnet",
            _hf("MPNetConfig", "MPNetModel", vocab_size=100, **tiny, max_position_embeddings=64),
            toks,
            dyn2,
            again,
        ),
        ZooModel(
            "clip_text",
            _hf(
                "CLIPTextConfig",
                "CLIPTextModel",
                vocab_size=100,
                **tiny,
                max_position_embeddings=32,
            ),
            toks,
            dyn2,
            again,
        ),
        ZooModel(
            "bloom",
            _hf("BloomConfig", "BloomModel", vocab_size=100, hidden_size=32, n_layer=2, n_head=4),
            toks,
            dyn2,
            again,
        ),
        ZooModel(
            "convnext",
            _hf(
                "ConvNextConfig",
                "ConvNextModel",
                num_channels=3,
                hidden_sizes=[8, 16],
                depths=[1, 1],
                num_stages=2,
            ),
            _pixels(32),
            {"pixel_values": {0: "batch"}},
        ),
        ZooModel(
            "swin",
            _hf(
                "SwinConfig",
                "SwinModel",
                image_size=32,
                patch_size=4,
                embed_dim=16,
                depths=[1, 1],
                num_heads=[2, 2],
                window_size=4,
            ),
            _pixels(32),
            {"pixel_values": {0: "batch"}},
        ),
        ZooModel(
            "segformer",
            _hf(
                "SegformerConfig",
                "SegformerModel",
                num_encoder_blocks=2,
                depths=[1, 1],
                sr_ratios=[2, 1],
                hidden_sizes=[8, 16],
                num_attention_heads=[1, 2],
                patch_sizes=[7, 3],
                strides=[4, 2],
                mlp_ratios=[2, 2],
            ),
            _pixels(32),
            {"pixel_values": {0: "batch"}},
        ),
        ZooModel(
            "wav2vec2",
            _hf(
                "Wav2Vec2Config",
                "Wav2Vec2Model",
                **tiny,
                conv_dim=(16, 16),
                conv_stride=(5, 2),
                conv_kernel=(10, 3),
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4,
                do_stable_layer_norm=False,
            ),
            lambda b, s: {
                "input_values": np.random.default_rng(s)
                .standard_normal((b, 400))
                .astype(np.float32)
            },
            {"input_values": {0: "batch", 1: "samples"}},
            lambda s: {
                "input_values": np.random.default_rng(s)
                .standard_normal((1, 640))
                .astype(np.float32)
            },
        ),
        _cached_decoder("LlamaConfig", "LlamaModel", 2, **llama),
        ZooModel(
            "bart",
            lambda: Seq2Seq("bart"),
            _seq2seq_inputs(12, 5),
            {**dyn2, "decoder_input_ids": {0: "batch", 1: "target"}},
            lambda s: _seq2seq_inputs(20, 3)(1, s),
        ),
        ZooModel(
            "gpt2_lm",
            _hf_wrapped(LogitsWrapper, "GPT2Config", "GPT2LMHeadModel", **_TINY_GPT2),
            toks,
            dyn2,
            again,
        ),
        ZooModel(
            "llama_lm",
            _hf_wrapped(LogitsWrapper, "LlamaConfig", "LlamaForCausalLM", **llama),
            toks,
            dyn2,
            again,
        ),
        ZooModel(
            "clip_vision",
            _hf_wrapped(
                PixelValuesWrapper,
                "CLIPVisionConfig",
                "CLIPVisionModel",
                **tiny,
                image_size=32,
                patch_size=8,
            ),  # fmt: skip
            _image(3, 32, 32),
            IMAGE_DYN,
        ),
        ZooModel(
            "deit",
            _hf_wrapped(
                PixelValuesWrapper, "DeiTConfig", "DeiTModel", **tiny, image_size=32, patch_size=8
            ),
            _image(3, 32, 32),
            IMAGE_DYN,
        ),
        ZooModel(  # two layers per stage: the second shifts its windows (Roll-like Slices)
            "swin_shifted",
            _hf(
                "SwinConfig",
                "SwinModel",
                image_size=32,
                patch_size=2,
                embed_dim=16,
                depths=[2, 2],
                num_heads=[2, 2],
                window_size=4,
            ),
            _pixels(32),
            {"pixel_values": {0: "batch"}},
        ),
    ]


def by_name(name: str) -> ZooModel:
    for m in [*zoo(), *_more_transformers()]:
        if m.name == name:
            return m
    raise KeyError(name)


def export(
    entry: ZooModel,
    path: Path,
    *,
    dynamo: bool,
    opset: int,
    dynamic: bool,
    batch: int = 1,
    fold: bool = True,
    initializers_as_inputs: bool = False,
    half: bool = False,
) -> dict[str, np.ndarray]:
    """Write `entry` to `path`; returns the example feeds it was traced with."""
    torch.manual_seed(0)
    module = entry.build().eval()
    # BatchNorm statistics that are not the identity, so folding them is exercised
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    feeds = entry.inputs(batch, 0)
    if half:  # float16 weights and float inputs, as models exported for GPUs are
        module = module.half()
        feeds = {n: a.astype(np.float16) if a.dtype == np.float32 else a for n, a in feeds.items()}
    names = list(feeds)
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    kwargs: dict[str, Any] = dict(input_names=names, output_names=["out"], opset_version=opset)
    if dynamic:
        if dynamo:
            kwargs["dynamic_shapes"] = tuple(
                {axis: torch.export.Dim.AUTO for axis in entry.dynamic.get(n, {})} or None
                for n in names
            )
        else:
            axes = {n: dict(entry.dynamic.get(n, {})) for n in names}
            axes["out"] = {0: "batch"}
            kwargs["dynamic_axes"] = axes
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, **kwargs)
        else:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                do_constant_folding=fold,
                keep_initializers_as_inputs=initializers_as_inputs,
                **kwargs,
            )
    return feeds
