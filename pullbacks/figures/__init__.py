"""Figures: the class × target grid, the temperature sweep, one-image explanations."""

from .explain import Explanation, explain_image, top_k
from .grid import Grid, class_target_grid, render_grids
from .sweep import temperature_sweep

__all__ = ["Grid", "class_target_grid", "render_grids", "temperature_sweep", "Explanation", "explain_image", "top_k"]
