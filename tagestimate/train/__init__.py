"""The train wing: settings, data set, tf.data pipeline, losses, metrics, run state, the loop and
cross-validation (multitrain_efficientnet.py)."""
