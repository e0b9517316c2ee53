"""bnaudit: audit batch normalization in frozen TensorFlow graphs."""

__version__ = "0.1.0"
