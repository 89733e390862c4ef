"""Images in, tensors out: image folders, transforms (liftings), measurement operators."""
