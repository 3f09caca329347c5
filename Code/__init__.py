"""Hermes: semi-supervised dual-threshold contrastive learning for ultrasound classification and segmentation."""
