"""Synthetic face generation (personas). The embedded default is MobileStyleGAN (FFHQ, 1024 px)."""
