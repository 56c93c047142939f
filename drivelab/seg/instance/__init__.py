"""Instance segmentation (Mask R-CNN) for COCO-style data such as ARMBench totes."""
