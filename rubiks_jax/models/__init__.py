"""RubiksNet models, baselines, their inference forms and the registry that builds them."""

from rubiks_jax.models.budget import budget_loss, budget_stats, mean_budget, set_temperature
from rubiks_jax.models.deploy import to_inference
from rubiks_jax.models.registry import MODELS, create_model, get_loss, get_model_family
from rubiks_jax.models.rubiksnet import TIERS, RubiksNet

__all__ = ["MODELS", "TIERS", "RubiksNet", "budget_loss", "budget_stats", "create_model",
           "get_loss", "get_model_family", "mean_budget", "set_temperature", "to_inference"]
