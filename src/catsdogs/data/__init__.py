"""Data stage: download the raw images, validate/de-duplicate/split them into a manifest, decode and load them."""
