"""Plugin manager, entry-point discovery and the typed name -> component registries."""

from mamba4net.registry.components import KINDS, Component, ComponentRegistry
from mamba4net.registry.manager import PluginInfo, Registry, default_registry

__all__ = ["KINDS", "Component", "ComponentRegistry", "PluginInfo", "Registry", "default_registry"]
