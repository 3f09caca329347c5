"""Self-supervised pre-training of the encoder (MoCo v2): data (train images only, two views), the MoCo pieces,
the loop, the k-NN monitor and the command line of ``Code/pretrain.py``."""
