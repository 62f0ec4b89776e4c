"""The teacher backbone: a Hugging Face decoder stack fed ``inputs_embeds``, adapted with LoRA.

    inputs_embeds (B, L, D) -> [decoder layer x num_layers] -> final norm -> hidden (B, L, D)

No token ids go in and no LM head comes out: the task's encoders make the embeddings and its head
reads the hidden states. LoRA (peft) adapts the attention projections; every
base weight is frozen, so the trainer, which optimizes whatever has ``requires_grad=True``, trains
only the adapters.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import Tensor, nn

from .config import HFTeacherParams, LoRAParams
from .loading import load_base_model

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel

ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


class HFTeacherBackbone(nn.Module):
    """``forward(inputs_embeds (B, L, D)) -> last hidden state (B, L, D)``; ``d_model == D``.

    Satisfies :class:`mamba4net.core.protocols.Backbone`. Reading weights for a student initializer:
    :meth:`attention_modules` (the live modules) or :meth:`attention_weights` (effective weights,
    LoRA deltas included, as plain tensors).
    """

    def __init__(
        self,
        base: "PreTrainedModel",
        lora: LoRAParams | None = None,
        *,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        source: str = "",
    ) -> None:
        super().__init__()
        if not hasattr(base, "layers"):
            raise TypeError(f"{type(base).__name__} has no .layers decoder stack")
        self.d_model: int = int(base.config.hidden_size)
        self.source = source
        base.config.use_cache = False
        base.requires_grad_(False)
        if gradient_checkpointing:
            # Non-reentrant: gradients reach the LoRA weights although the inputs may not need grad.
            kwargs = {"use_reentrant": False}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5 name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

        self.model: nn.Module = base  # the transformers base model, or a peft PeftModel around it
        self._has_lora = lora is not None and lora.enabled
        if self._has_lora:
            self.model = _add_lora(base, lora, seed)
        for name, p in self.model.named_parameters():  # only adapters train, whatever peft did
            p.requires_grad_(self._has_lora and "lora_" in name)

    @classmethod
    def from_params(cls, params: HFTeacherParams) -> "HFTeacherBackbone":
        base = load_base_model(params)
        return cls(
            base,
            params.lora,
            gradient_checkpointing=params.gradient_checkpointing,
            seed=params.seed,
            source=params.model,
        )

    # ---------------------------------------------------------------------------------------
    # Forward
    # ---------------------------------------------------------------------------------------

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """``inputs_embeds (B, L, D)`` -> last hidden state ``(B, L, D)`` (after the final norm),
        in the dtype of ``inputs_embeds`` (the model computes in its own dtype).
        ``attention_mask (B, L)``: 1 for real tokens, 0 for padding (optional)."""
        out = self.run(inputs_embeds, attention_mask)
        return out.last_hidden_state.to(inputs_embeds.dtype)  # (B, L, D)

    def hidden_states(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """Per-layer hidden states for hidden-state alignment: ``num_layers + 1`` tensors
        ``(B, L, D)``: the input of each decoder layer, then the final (normed) output."""
        out = self.run(inputs_embeds, attention_mask, output_hidden_states=True)
        return tuple(h.to(inputs_embeds.dtype) for h in out.hidden_states)

    def run(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None, **kwargs: Any):
        """The underlying transformers call (a ``BaseModelOutputWithPast``); ``kwargs`` go through,
        e.g. ``output_attentions=True`` (needs ``attn_implementation: eager``)."""
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.d_model:
            raise ValueError(
                f"inputs_embeds must be (B, L, {self.d_model}), got {tuple(inputs_embeds.shape)}"
            )
        x = inputs_embeds.to(self.dtype)  # (B, L, D)
        # Call the base model directly: LoRA layers are injected in place, peft's wrapper adds nothing.
        return self.base_model(inputs_embeds=x, attention_mask=attention_mask, use_cache=False, **kwargs)

    # ---------------------------------------------------------------------------------------
    # Streaming with a KV cache (efficiency benchmarks: one decision per new token)
    # ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def extend_cache(self, x: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """``T`` new tokens per stream ``x (B, T, D)`` after the history held in ``cache`` (a
        transformers ``DynamicCache``, grown in place; None: no history yet), at the positions that
        follow it: ``-> (hidden (B, T, D), cache)``."""
        out = self.base_model(inputs_embeds=x.to(self.dtype), past_key_values=cache, use_cache=True)
        if out.past_key_values is None:  # transformers drops the cache while training with checkpointing
            raise RuntimeError(f"teacher {self.source or ''!r} returned no KV cache (in training mode with "
                               f"gradient checkpointing?): decide with the model in eval() mode")
        return out.last_hidden_state.to(x.dtype), out.past_key_values

    def prefill_cache(self, inputs_embeds: Tensor) -> tuple[Tensor, Any]:
        """Encode a history ``(B, L, D)`` and keep its keys/values: ``-> (hidden (B, L, D), cache)``,
        the cache :meth:`step_cached` extends."""
        return self.extend_cache(inputs_embeds, None)

    def step_cached(self, x: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """One new token per stream ``x (B, D) -> (y (B, D), cache)``. The cache grows by one
        position (in place): memory and attention cost per decision grow with the history, unlike
        a recurrent student's ``step``. ``cache=None`` starts an empty history."""
        y, cache = self.extend_cache(x[:, None], cache)
        return y[:, 0], cache  # (B, D)

    def decoder(self, batch_size: int, state: Any = None) -> "KVCacheDecoder":
        """A streaming decoder over a KV cache (:func:`mamba4net.core.streaming.decoder_for`):
        each token attends to the whole stream so far, as in :meth:`forward` over it. Exact
        against re-encoding only while the stream starts where a re-encoded context does (a
        policy's context *blocks*, not a sliding window)."""
        from .decoder import KVCacheDecoder

        return KVCacheDecoder(self, batch_size, state)

    # ---------------------------------------------------------------------------------------
    # Taps (mamba4net.core.taps): what loss terms may read of a forward pass
    # ---------------------------------------------------------------------------------------

    def tap_points(self) -> dict[str, Any]:
        """``block_in.<i>``/``block_out.<i>`` of every decoder layer, and ``attn_probs.<i>``: layer
        ``i``'s per-head softmax attention probabilities ``(B, H, L, L)`` (KV heads repeated to the
        query heads), computed with eager attention while they are collected."""
        from mamba4net.core.taps import TapPoint, block_tap_points

        points = block_tap_points(self.layers)
        eager = self.eager_attention  # one object: entered once however many layers are tapped
        for i, layer in enumerate(self.layers):
            points[f"attn_probs.{i}"] = TapPoint(layer.self_attn, _attention_probabilities, enable=eager)
        return points

    @contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Within the block the model computes attention eagerly (explicit softmax probabilities,
        which its attention modules then return); the previous implementation afterwards."""
        config = self.base_model.config
        before = config._attn_implementation
        config._attn_implementation = "eager"
        try:
            yield
        finally:
            config._attn_implementation = before

    def unused_parameter_names(self) -> list[str]:
        """Names (as in ``named_parameters()``) of parameters ``forward`` never reads: the token
        embedding table, since the task's encoders supply ``inputs_embeds``. Deployment size can
        be reported with and without them."""
        embed = self.base_model.get_input_embeddings()
        unused = {id(p) for p in embed.parameters()} if embed is not None else set()
        return [n for n, p in self.named_parameters() if id(p) in unused]

    # ---------------------------------------------------------------------------------------
    # Structure
    # ---------------------------------------------------------------------------------------

    @property
    def has_lora(self) -> bool:
        """Whether unmerged LoRA adapters are present (``self.model`` is then a peft PeftModel)."""
        return self._has_lora

    @property
    def base_model(self) -> "PreTrainedModel":
        """The transformers base model (e.g. ``LlamaModel``), LoRA layers inside if not merged."""
        return self.model.get_base_model() if self.has_lora else self.model

    @property
    def config(self) -> "PretrainedConfig":
        return self.base_model.config

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the base weights compute in (LoRA adapters may be kept in float32)."""
        return self.base_model.norm.weight.dtype

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers (each has ``self_attn``, ``mlp``, ``input_layernorm``, ...)."""
        return self.base_model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def num_kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None) or self.num_heads)

    @property
    def head_dim(self) -> int:
        return int(getattr(self.config, "head_dim", None) or self.d_model // self.num_heads)

    def attention_modules(self) -> list[nn.Module]:
        """Each decoder layer's attention module, with ``q_proj``/``k_proj``/``v_proj``/``o_proj``.

        Shapes of ``.weight`` (``H`` heads, ``KV`` key/value heads, ``hd`` head_dim, ``D`` width):
        q ``(H*hd, D)``, k and v ``(KV*hd, D)``, o ``(D, H*hd)``. While LoRA is not merged these
        projections are peft layers whose ``.weight`` is the *base* weight: use
        :meth:`attention_weights` (or :meth:`merge_lora` first) for the adapted weights.
        """
        return [layer.self_attn for layer in self.layers]

    @torch.no_grad()
    def attention_weights(self, layer: int) -> dict[str, Tensor]:
        """Effective attention weights of decoder layer ``layer`` (base + LoRA delta), detached
        copies keyed ``q_proj.weight`` ... ``o_proj.weight`` (plus ``*.bias`` where present)."""
        attn = self.layers[layer].self_attn
        out: dict[str, Tensor] = {}
        for name in ATTN_PROJ:
            proj = getattr(attn, name)
            weight, bias = effective_linear(proj)
            out[f"{name}.weight"] = weight
            if bias is not None:
                out[f"{name}.bias"] = bias
        return out

    # ---------------------------------------------------------------------------------------
    # LoRA
    # ---------------------------------------------------------------------------------------

    def lora_state_dict(self) -> dict[str, Tensor]:
        """Only the LoRA tensors (a few hundred KB), keyed as in this module's ``state_dict``, so
        ``load_lora_state_dict`` (or ``load_state_dict(strict=False)``) restores them."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if "lora_" in k}

    def load_lora_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore adapters saved by :meth:`lora_state_dict`; every key must match exactly."""
        expected = {k for k in self.state_dict() if "lora_" in k}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(
                f"LoRA state does not match this teacher: {len(missing)} missing "
                f"(e.g. {min(missing, default='-')}), {len(unexpected)} unexpected "
                f"(e.g. {min(unexpected, default='-')})"
            )
        self.load_state_dict(state, strict=False)

    def merge_lora(self) -> "HFTeacherBackbone":
        """Fold the adapters into the base weights (peft ``merge_and_unload``); outputs unchanged,
        forward a little faster, ``attention_modules()`` then show the adapted weights. In place;
        returns self. A no-op without LoRA."""
        if self.has_lora:
            self.model = self.model.merge_and_unload()
            self.model.requires_grad_(False)
            self._has_lora = False
        return self

    # ---------------------------------------------------------------------------------------
    # Reporting
    # ---------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """JSON-serializable facts for run reports."""
        return {
            "source": self.source,
            "architecture": type(self.base_model).__name__,
            "d_model": self.d_model,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "dtype": str(self.dtype).removeprefix("torch."),
            "lora": self.has_lora,
            "parameters": sum(p.numel() for p in self.parameters()),
            "trainable_parameters": sum(p.numel() for p in self.parameters() if p.requires_grad),
        }

    def extra_repr(self) -> str:
        return f"source={self.source!r}, d_model={self.d_model}, num_layers={self.num_layers}, lora={self.has_lora}"


def _add_lora(base: "PreTrainedModel", lora: LoRAParams, seed: int) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
        bias="none",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)  # LoRA A is random (B is zero): make it reproducible
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        try:
            return get_peft_model(base, config)
        except ValueError as exc:  # e.g. a target module name that does not exist
            raise ValueError(f"teacher LoRA: {str(exc).splitlines()[0]}") from exc


def _attention_probabilities(args: tuple, kwargs: dict, output: Any) -> Tensor:
    """The probabilities an attention module returns beside its output: ``(B, H, L, L)``."""
    probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if probs is None:
        raise RuntimeError("the teacher's attention returned no probabilities (not eager attention)")
    return probs


def effective_linear(proj: nn.Module) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of a Linear or of a peft LoRA Linear, with unmerged LoRA deltas added."""
    from peft.tuners.lora import LoraLayer

    if isinstance(proj, LoraLayer):
        base = proj.get_base_layer()
        weight = base.weight.detach().clone()
        if not proj.merged:
            for adapter in proj.active_adapters:
                if adapter in proj.lora_A:
                    weight += proj.get_delta_weight(adapter).to(weight.dtype)
    else:
        base = proj
        weight = proj.weight.detach().clone()
    bias = base.bias.detach().clone() if getattr(base, "bias", None) is not None else None
    return weight, bias
