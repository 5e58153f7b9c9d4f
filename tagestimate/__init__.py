"""Shared code of the NDL illustration tagger: labels, images, model, training, inference, crawling."""

import os


def quiet_tensorflow():
    """Hide TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
