"""Shared code of the NDL illustration tagger: labels, images, model, training, inference, crawling."""

from tagestimate import tfenv

# Before anything can import TensorFlow: its C++ logging reads this once, when it loads.
tfenv.set_environment()


def quiet_tensorflow():
    """Import TensorFlow the project's one way (tagestimate.tfenv): quiet unless asked otherwise.

    Call it before `import tensorflow` / `import keras`; those then find the loaded module.
    """
    tfenv.import_tensorflow()
