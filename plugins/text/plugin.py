"""Entry point of the ``text`` plugin (import-light: torch only inside the factories)."""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import LMHeadParams, TextLMParams, TokenEmbedParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_task(params: TextLMParams):
    from .task import TextLMTask

    return TextLMTask(params)


def build_token_embed(params: TokenEmbedParams, *, task, d_model: int):
    from .modules import TokenEmbedding

    return TokenEmbedding(task.embeddings[0], d_model, params.freeze)


def build_lm_head(params: LMHeadParams, *, task, d_model: int):
    from .modules import LMHead

    return LMHead(task.embeddings[1], d_model, params.freeze)


def build_unigram(params, *, task):
    from .modules import Unigram

    return Unigram()


@hookimpl
def mamba4net_register_tasks(register):
    register("text_lm", build_task, params=TextLMParams)


@hookimpl
def mamba4net_register_encoders(register):
    register("token_embed", build_token_embed, params=TokenEmbedParams)


@hookimpl
def mamba4net_register_heads(register):
    register("lm_head", build_lm_head, params=LMHeadParams)


@hookimpl
def mamba4net_register_baselines(register):
    register("unigram", build_unigram, task="text_lm")
