"""Datasets, manifests, sample ids and the embedded default data (scikit-learn digits)."""
from influencegate.data.captions import caption_digits, captioned_digits, class_prompts, shuffle_captions
from influencegate.data.constants import (
    CIFAR10_GRAY_MEAN,
    CIFAR10_GRAY_STD,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGE_EXTENSIONS,
)
from influencegate.data.dataset import ImageDataset, denormalize
from influencegate.data.errors import DatasetError
from influencegate.data.loader import load_images
from influencegate.data.pairs import DIGITS_CAPTIONS, load_pairs

__all__ = [
    "CIFAR10_GRAY_MEAN",
    "CIFAR10_GRAY_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DIGITS_CAPTIONS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "ImageDataset",
    "caption_digits",
    "captioned_digits",
    "class_prompts",
    "denormalize",
    "load_images",
    "load_pairs",
    "shuffle_captions",
]
