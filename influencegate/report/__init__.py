"""Figures, pages and notes of an audit (PIL / matplotlib / HTML), no tracking calls."""
from influencegate.plotting.canvas import image_grid, placeholder
from influencegate.plotting.galleries import duplicate_gallery, group_histograms, outlier_gallery
from influencegate.report.figures import dataset_images, influence_grids, influence_histogram
from influencegate.report.findings_figures import embedding_map, html_summary, render_all

__all__ = ["dataset_images", "duplicate_gallery", "embedding_map", "group_histograms", "html_summary", "image_grid",
           "influence_grids", "influence_histogram", "outlier_gallery", "placeholder", "render_all"]
