"""Networks, masking and checkpoints."""

from microsnoop.models.checkpoint import load_checkpoint, load_encoder, save_checkpoint
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet

__all__ = ["MicrosnoopEncoder", "MicrosnoopUNet", "load_checkpoint", "load_encoder", "save_checkpoint"]
