"""Entry point of the ``vision`` plugin (import-light: torch only inside the factories)."""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import ClassifierHeadParams, ImageClassificationParams, LogisticRegressionParams, PatchEmbedParams, ViTParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_task(params: ImageClassificationParams):
    from .task import ImageClassificationTask

    return ImageClassificationTask(params)


def build_patch_embed(params: PatchEmbedParams, *, task, d_model: int):
    from .encoder import PatchEmbed

    return PatchEmbed(task.channels, task.patch, task.tokens, d_model, params.positional)


def build_classifier(params: ClassifierHeadParams, *, task, d_model: int):
    from .head import ClassifierHead

    return ClassifierHead(d_model, task.n_classes, params.pool)


def build_vit(params: ViTParams):
    from .vit import ViTBackbone

    return ViTBackbone(params)


def build_logistic_regression(params: LogisticRegressionParams, *, task):
    from .baselines import PixelLogisticRegression

    return PixelLogisticRegression(params)


@hookimpl
def mamba4net_register_tasks(register):
    register("image_classification", build_task, params=ImageClassificationParams)


@hookimpl
def mamba4net_register_encoders(register):
    register("patch_embed", build_patch_embed, params=PatchEmbedParams)


@hookimpl
def mamba4net_register_heads(register):
    register("classifier", build_classifier, params=ClassifierHeadParams)


@hookimpl
def mamba4net_register_teachers(register):
    register("vit", build_vit, params=ViTParams)


@hookimpl
def mamba4net_register_baselines(register):
    register("logistic_regression", build_logistic_regression, params=LogisticRegressionParams,
             task="image_classification")
