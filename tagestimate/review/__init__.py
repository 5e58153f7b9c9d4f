"""The review wing: the inference and training reports, thumbnails and Grad-CAM."""
