"""Figures and image grids of an audit (PIL / matplotlib), no tracking calls."""
from influencegate.report.figures import image_grid, influence_grids, influence_histogram
from influencegate.report.findings_figures import (dataset_images, duplicate_gallery, embedding_map, group_histograms,
                                                   html_summary, outlier_gallery, placeholder, render_all)

__all__ = ["dataset_images", "duplicate_gallery", "embedding_map", "group_histograms", "html_summary", "image_grid",
           "influence_grids", "influence_histogram", "outlier_gallery", "placeholder", "render_all"]
