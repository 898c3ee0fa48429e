"""Fine-tuned detection transfer: Mask R-CNN R-FPN (torchvision) on COCO / LVIS from any ResNet encoder."""
