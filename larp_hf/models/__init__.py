from . import vqvae
from .vqvae import *  # noqa: F403  (the names are listed in vqvae.__all__)


__all__ = list(vqvae.__all__)
