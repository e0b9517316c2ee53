"""Checkpoints, read without TensorFlow: tensor bundles and Keras files, resolved from whatever
path a user passes (`resolve`), and their BN variables grouped into layers (`groups`)."""
