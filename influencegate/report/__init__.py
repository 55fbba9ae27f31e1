"""Figures and image grids of an audit (PIL / matplotlib), no tracking calls."""
from influencegate.report.figures import image_grid, influence_grids, influence_histogram

__all__ = ["image_grid", "influence_grids", "influence_histogram"]
