"""TensorFlow's file formats as bnaudit reads them, without TensorFlow: message definitions,
tensor decoding, file signatures and the `.meta` a TF1 Saver writes."""
