"""RubiksNet models, baselines and their inference forms."""

from rubiks_jax.models.budget import budget_loss, budget_stats, mean_budget, set_temperature
from rubiks_jax.models.deploy import to_inference
from rubiks_jax.models.rubiksnet import TIERS, RubiksNet

__all__ = ["TIERS", "RubiksNet", "budget_loss", "budget_stats", "mean_budget", "set_temperature",
           "to_inference"]
