"""Data, the bottom layer: image files, test inputs, masks, measurement operators, transforms (liftings), errors."""
