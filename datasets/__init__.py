"""Data, the bottom layer: image files, test inputs, masks, noise, transforms (liftings), file safety, errors."""
