"""Encoders (image, text, dual), checkpoint loading, SSL objectives, augmentations and the small SSL trainer."""
from influencegate.models.augment import AugmentConfig, augment, default_augment_config
from influencegate.models.backbones import cifar_resnet18, torchvision_encoder
from influencegate.models.checkpoints import load_encoder, load_image_text_encoders, save_encoder
from influencegate.models.dual import DualEncoder, LoRALinear, add_lora
from influencegate.models.external import FAMILIES, encoder_spec_problem
from influencegate.models.heads import METHODS
from influencegate.models.registry import ENCODERS, build_encoder
from influencegate.models.small_cnn import SmallCNN
from influencegate.models.ssl_losses import barlow_twins_loss, byol_loss, simclr_loss
from influencegate.models.text import MINILM_DIM, encode_texts
from influencegate.models.trainer import PretrainResult, pretrain

__all__ = [
    "ENCODERS",
    "FAMILIES",
    "METHODS",
    "MINILM_DIM",
    "AugmentConfig",
    "DualEncoder",
    "LoRALinear",
    "PretrainResult",
    "SmallCNN",
    "add_lora",
    "augment",
    "barlow_twins_loss",
    "build_encoder",
    "byol_loss",
    "cifar_resnet18",
    "default_augment_config",
    "encode_texts",
    "encoder_spec_problem",
    "load_encoder",
    "load_image_text_encoders",
    "pretrain",
    "save_encoder",
    "simclr_loss",
    "torchvision_encoder",
]
