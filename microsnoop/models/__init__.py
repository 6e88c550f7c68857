"""Networks, masking and checkpoints."""

from microsnoop.models.checkpoint import load_checkpoint, load_encoder, save_checkpoint
from microsnoop.models.factory import load_named, untrained_encoder
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet

__all__ = [
    "MicrosnoopEncoder",
    "MicrosnoopUNet",
    "load_checkpoint",
    "load_encoder",
    "load_named",
    "save_checkpoint",
    "untrained_encoder",
]
